-- grain: one row per (chatbot_id, session_id)
-- description: Inbox sessions (conversations) as listed by the API, latest version per key.
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   session_id: Session id, unique only within a chatbot (a UUID on the web, a phone number on WhatsApp).
--   project_id: Project the chatbot belongs to.
--   platform: Channel, 'web' or 'whatsapp'; inferred from the session id when the API omits it.
--   status: Session status in lowercase ('active' or 'closed').
--   visitor_name: Visitor profile name (user_profile_name); personal data.
--   website_url: Website the conversation happened on (null on WhatsApp).
--   last_message_preview: Text of the last message, as listed by the API.
--   last_message_direction: Who sent the last message, normalized to 'user' or 'assistant'.
--   started_at: When the session started (UTC).
--   last_message_at: When the last message was sent (UTC).
--   loaded_at: When the pipeline loaded this version of the record (UTC).
--   run_id: Pipeline run that loaded this version of the record.
with

-- Not materialized: it is read twice, and a materialized copy would hold every payload.
-- A chunked full build reads a cut of the raw table that carries its rowid as a column;
-- columns(...) leaves that column out (on the raw table itself it excludes nothing).
source as not materialized (
    select rowid as _row_id, columns(lambda c: c != 'rowid') from raw.robofy__inbox_sessions
),

-- The latest version of each key is chosen on narrow rows, so the sort never carries a payload.
latest_rows as (
    select _row_id
    from source
    qualify row_number() over (
        partition by chatbot_id, session_id order by _loaded_at desc
    ) = 1
),

latest as (
    select * exclude (_row_id)
    from source
    semi join latest_rows on source._row_id = latest_rows._row_id
),

parsed as (
    select
        * exclude (_payload),
        -- each payload is parsed once: a listing can carry a multi-megabyte last message (issue 8)
        try_cast(_payload as struct(
            platform varchar,
            status varchar,
            user_profile_name varchar,
            website_url varchar,
            last_message varchar,
            last_message_direction varchar
        )) as record,
    from latest
),

final as (
    select
        -- ids
        chatbot_id,
        session_id,
        project_id,

        -- attributes
        coalesce(
            nullif(lower(trim(record.platform)), ''),
            -- WhatsApp sessions are keyed by the visitor's phone number
            case when regexp_full_match(session_id, '\+?[0-9]+') then 'whatsapp' else 'web' end
        ) as platform,
        lower(trim(record.status)) as status,
        record.user_profile_name as visitor_name,
        record.website_url as website_url,
        record.last_message as last_message_preview,
        case
            when lower(trim(record.last_message_direction)) in ('user', 'visitor', 'inbound')
                then 'user'
            when lower(trim(record.last_message_direction)) in ('assistant', 'agent', 'outbound')
                then 'assistant'
            else lower(trim(record.last_message_direction))
        end as last_message_direction,

        -- timestamps
        started_at,
        last_message_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from parsed
)

select * from final
