-- grain: one row per (lead_id, field_name)
-- description: One row per form field of a lead (the long form of marts.leads); a field name repeated in one form keeps its first value.
-- incremental:
--   key: lead_id
--   staging.stg_robofy__leads: lead_id
-- columns:
--   lead_id: Lead id from Robofy.
--   field_name: Form field name as sent by the API (for example 'email').
--   field_type: Form field type as sent by the API (for example 'email', 'text').
--   field_value: Value the visitor entered; personal data.
--   field_position: 1-based position of the field in the form.
--   project_id: Project the lead was captured in.
--   chatbot_id: Chatbot that captured the lead.
--   created_at: When the lead was captured (UTC).
with

leads as (
    select * from staging.stg_robofy__leads
),

-- Select-list unnest streams; a lateral `cross join unnest(...) with ordinality` held every
-- lead's fields in memory and ran out of it on a year of leads (issue 9).
exploded as (
    select
        lead_id,
        project_id,
        chatbot_id,
        created_at,
        fields,
        unnest(fields) as field,
        generate_subscripts(fields, 1) as field_position,
    from leads
),

-- A name repeated in one form keeps its first field: each field is compared with the fields
-- before it in its own form, a per-row test, so no window has to hold all fields of all leads.
first_per_name as (
    select
        lead_id,
        project_id,
        chatbot_id,
        created_at,
        trim(field.field_name) as field_name,
        field.field_type as field_type,
        field.field_value as field_value,
        field_position::integer as field_position,
    from exploded
    where nullif(trim(field.field_name), '') is not null
        and not list_contains(
            list_transform(fields[:field_position - 1], lambda earlier: trim(earlier.field_name)),
            trim(field.field_name)
        )
),

final as (
    select
        -- ids
        lead_id,
        field_name,

        -- attributes
        field_type,
        field_value,
        field_position,
        project_id,
        chatbot_id,

        -- timestamps
        created_at,
    from first_per_name
)

select * from final
