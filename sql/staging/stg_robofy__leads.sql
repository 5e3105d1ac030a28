-- grain: one row per lead_id
-- description: Leads captured by chatbot forms, latest version per id; form fields kept as a list.
-- columns:
--   lead_id: Lead id from Robofy.
--   project_id: Project the lead was captured in.
--   chatbot_id: Chatbot that captured the lead.
--   session_id: Inbox session the lead came from, when the API says so.
--   source: Where the lead came from, as sent by the API (for example 'chatbot').
--   page_url: Page the lead form was submitted on.
--   ip_address: Visitor IP address; personal data.
--   fields: Form fields in API order, as a list of (field_name, field_type, field_value).
--   created_at: When the lead was captured (UTC).
--   loaded_at: When the pipeline loaded this version of the record (UTC).
--   run_id: Pipeline run that loaded this version of the record.
with

source as (
    select * from raw.robofy__leads
),

latest as (
    select *
    from source
    qualify row_number() over (partition by lead_id order by _loaded_at desc) = 1
),

final as (
    select
        -- ids
        lead_id,
        project_id,
        chatbot_id,
        nullif(trim(session_id), '') as session_id,

        -- attributes
        _payload ->> 'source' as source,
        _payload ->> 'page_url' as page_url,
        _payload ->> 'ip_address' as ip_address,
        coalesce(
            try(from_json(
                _payload -> 'lead_data',
                '[{"field_name": "VARCHAR", "field_type": "VARCHAR", "field_value": "VARCHAR"}]'
            )),
            []
        ) as fields,

        -- timestamps
        created_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from latest
)

select * from final
