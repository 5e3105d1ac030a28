-- PostgreSQL variant of sql/staging/stg_robofy__inbox_sessions.sql: the same columns and rows.
-- grain: one row per (chatbot_id, session_id)
-- The DuckDB model's rowid / columns(lambda) / struct cast are DuckDB-only; here the latest
-- version is picked with distinct on, and each field is read with ->> (text, as DuckDB's
-- varchar struct fields give it).
with

latest as (
    select distinct on (chatbot_id, session_id) *
    from raw.robofy__inbox_sessions
    order by chatbot_id, session_id, _loaded_at desc
),

final as (
    select
        -- ids
        chatbot_id,
        session_id,
        project_id,

        -- attributes
        coalesce(
            nullif(lower(trim(_payload ->> 'platform')), ''),
            -- WhatsApp sessions are keyed by the visitor's phone number
            case when session_id ~ '^\+?[0-9]+$' then 'whatsapp' else 'web' end
        ) as platform,
        lower(trim(_payload ->> 'status')) as status,
        _payload ->> 'user_profile_name' as visitor_name,
        _payload ->> 'website_url' as website_url,
        _payload ->> 'last_message' as last_message_preview,
        case
            when lower(trim(_payload ->> 'last_message_direction')) in ('user', 'visitor', 'inbound')
                then 'user'
            when lower(trim(_payload ->> 'last_message_direction'))
                in ('assistant', 'agent', 'outbound')
                then 'assistant'
            else lower(trim(_payload ->> 'last_message_direction'))
        end as last_message_direction,

        -- timestamps
        started_at,
        last_message_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id
    from latest
)

select * from final
