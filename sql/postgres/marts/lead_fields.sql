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
-- PostgreSQL variant of sql/marts/lead_fields.sql (same columns, same rows): the `fields` list
-- exploded by json_array_elements with ordinality; the first field of a repeated name by
-- row_number().
with

leads as (
    select * from staging.stg_robofy__leads
),

exploded as (
    select
        leads.lead_id,
        leads.project_id,
        leads.chatbot_id,
        leads.created_at,
        lead_field.field,
        lead_field.position::integer as field_position
    from leads
    cross join lateral
        json_array_elements(leads.fields) with ordinality as lead_field (field, position)
),

-- A name repeated in one form keeps its first field.
numbered as (
    select
        lead_id,
        project_id,
        chatbot_id,
        created_at,
        trim(field ->> 'field_name') as field_name,
        field ->> 'field_type' as field_type,
        field ->> 'field_value' as field_value,
        field_position,
        row_number() over (
            partition by lead_id, trim(field ->> 'field_name') order by field_position
        ) as occurrence
    from exploded
    where nullif(trim(field ->> 'field_name'), '') is not null
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
        created_at
    from numbered
    where occurrence = 1
)

select * from final
