-- grain: one row per lead_id
-- description: One row per lead captured by a chatbot form, with the common form fields pivoted into columns (name, email, phone, company).
-- incremental:
--   key: lead_id
--   staging.stg_robofy__leads: lead_id
--   staging.stg_robofy__chatbots: lookup chatbot_id using name
--   staging.stg_robofy__inbox_sessions: lookup chatbot_id, session_id using platform
-- columns:
--   lead_id: Lead id from Robofy.
--   project_id: Project the lead was captured in.
--   chatbot_id: Chatbot that captured the lead.
--   session_id: Inbox session the lead came from; null when the API does not link one.
--   chatbot_name: Name of the chatbot that captured the lead.
--   platform: Channel of the linked session ('web' or 'whatsapp'); null without a listed session.
--   source: Where the lead came from, as sent by the API (for example 'chatbot').
--   page_url: Page the lead form was submitted on.
--   name: Visitor name from the form (name or full_name, else first_name + last_name); personal data.
--   email: Visitor email from the form, trimmed and lowercased; personal data.
--   phone: Visitor phone number from the form; personal data.
--   company: Visitor company from the form.
--   field_count: Number of form fields the lead carries (see marts.lead_fields).
--   created_at: When the lead was captured (UTC).
--   created_date: UTC day the lead was captured.
-- PostgreSQL variant of sql/marts/leads.sql (same columns, same rows): DuckDB's list lambdas
-- over the `fields` list become a lateral subquery over json_array_elements.
with

leads as (
    select * from staging.stg_robofy__leads
),

chatbots as (
    select * from staging.stg_robofy__chatbots
),

sessions as (
    select * from staging.stg_robofy__inbox_sessions
),

pivoted as (
    select
        leads.*,
        kv.full_name,
        kv.first_name,
        kv.last_name,
        kv.email_value,
        kv.phone_value,
        kv.company_value
    from leads
    cross join lateral (
        select
            (array_agg(f.value order by f.position)
                filter (where f.key in ('name', 'full_name', 'fullname', 'your_name')))[1]
                as full_name,
            (array_agg(f.value order by f.position)
                filter (where f.key in ('first_name', 'firstname')))[1] as first_name,
            (array_agg(f.value order by f.position)
                filter (where f.key in ('last_name', 'lastname', 'surname')))[1] as last_name,
            (array_agg(f.value order by f.position)
                filter (
                    where f.key in ('email', 'email_address', 'e-mail', 'e_mail')
                        or f.type = 'email'
                ))[1] as email_value,
            (array_agg(f.value order by f.position)
                filter (
                    where f.key in ('phone', 'phone_number', 'mobile', 'telephone', 'tel', 'whatsapp')
                        or f.type in ('phone', 'tel')
                ))[1] as phone_value,
            (array_agg(f.value order by f.position)
                filter (
                    where f.key in ('company', 'company_name', 'organization', 'organisation')
                ))[1] as company_value
        -- form fields keyed by a normalized name, values trimmed, empty values dropped
        from (
            select
                lower(trim(field ->> 'field_name')) as key,
                lower(trim(field ->> 'field_type')) as type,
                trim(field ->> 'field_value') as value,
                position
            from json_array_elements(leads.fields) with ordinality as lead_field (field, position)
            where nullif(trim(field ->> 'field_value'), '') is not null
        ) as f
    ) as kv
),

final as (
    select
        -- ids
        pivoted.lead_id,
        pivoted.project_id,
        pivoted.chatbot_id,
        pivoted.session_id,

        -- attributes
        chatbots.name as chatbot_name,
        sessions.platform,
        pivoted.source,
        pivoted.page_url,
        coalesce(
            pivoted.full_name, nullif(concat_ws(' ', pivoted.first_name, pivoted.last_name), '')
        ) as name,
        lower(pivoted.email_value) as email,
        pivoted.phone_value as phone,
        pivoted.company_value as company,
        json_array_length(pivoted.fields)::integer as field_count,

        -- timestamps
        pivoted.created_at,
        pivoted.created_at::date as created_date
    from pivoted
    left join chatbots on pivoted.chatbot_id = chatbots.chatbot_id
    left join sessions
        on pivoted.chatbot_id = sessions.chatbot_id
        and pivoted.session_id = sessions.session_id
)

select * from final
