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

-- Not materialized: it is read twice, and a materialized copy would hold every payload.
-- A chunked full build reads a cut of the raw table that carries its rowid as a column;
-- columns(...) leaves that column out (on the raw table itself it excludes nothing).
source as not materialized (
    select rowid as _row_id, columns(lambda c: c != 'rowid') from raw.robofy__leads
),

-- The latest version of each key is chosen on narrow rows, so the sort never carries a payload.
latest_rows as (
    select _row_id
    from source
    qualify row_number() over (partition by lead_id order by _loaded_at desc) = 1
),

latest as (
    select * exclude (_row_id)
    from source
    semi join latest_rows on source._row_id = latest_rows._row_id
),

parsed as (
    select
        * exclude (_payload),
        -- each payload is parsed once (issue 8)
        try_cast(_payload as struct(
            source varchar,
            page_url varchar,
            ip_address varchar,
            lead_data struct(field_name varchar, field_type varchar, field_value varchar)[]
        )) as record,
    from latest
),

final as (
    select
        -- ids
        lead_id,
        project_id,
        chatbot_id,
        nullif(trim(session_id), '') as session_id,

        -- attributes
        record.source as source,
        record.page_url as page_url,
        record.ip_address as ip_address,
        coalesce(record.lead_data, []) as fields,

        -- timestamps
        created_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from parsed
)

select * from final
