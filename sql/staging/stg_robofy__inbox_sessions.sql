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

source as (
    select * from raw.robofy__inbox_sessions
),

latest as (
    select *
    from source
    qualify row_number() over (
        partition by chatbot_id, session_id order by _loaded_at desc
    ) = 1
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
            case when regexp_full_match(session_id, '\+?[0-9]+') then 'whatsapp' else 'web' end
        ) as platform,
        lower(trim(_payload ->> 'status')) as status,
        _payload ->> 'user_profile_name' as visitor_name,
        _payload ->> 'website_url' as website_url,
        _payload ->> 'last_message' as last_message_preview,
        case
            when lower(trim(_payload ->> 'last_message_direction')) in ('user', 'visitor', 'inbound')
                then 'user'
            when lower(trim(_payload ->> 'last_message_direction')) in ('assistant', 'agent', 'outbound')
                then 'assistant'
            else lower(trim(_payload ->> 'last_message_direction'))
        end as last_message_direction,

        -- timestamps
        started_at,
        last_message_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from latest
)

select * from final
