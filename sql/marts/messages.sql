-- grain: one row per (chatbot_id, session_id, message_id)
-- description: One row per transcript message, in conversation order, with normalized role, joined text and part details.
-- incremental:
--   key: chatbot_id, session_id
--   staging.stg_robofy__chat_messages: chatbot_id, session_id
--   staging.stg_robofy__inbox_sessions: chatbot_id, session_id
--   span: sent_at per chatbot_id, session_id
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   session_id: Session the message belongs to (unique within a chatbot).
--   message_id: Message id from Robofy.
--   project_id: Project the chatbot belongs to.
--   ordinal: 0-based position of the message in the transcript, in API order.
--   role: Sender, 'user' (the visitor) or 'assistant' (AI or human agent).
--   role_raw: Sender role exactly as sent by the API (user, assistant, visitor, agent, ...).
--   text: The message's text parts joined with a newline; null when it has no text.
--   part_count: Number of parts in the message.
--   has_non_text: True when the message has a part that is not text (image, buttons, ...).
--   content_types: Distinct part types of the message, sorted, comma-separated (for example 'image,text').
--   context_id: Robofy context id of the message (from its parts).
--   platform: Channel of the session, 'web' or 'whatsapp'; null when the session is not listed.
--   website_url: Website the message was sent from: the part's URL, else the session's.
--   seconds_since_previous: Seconds since the previous message of the same session; null for the first.
--   sent_at: When the message was sent (UTC).
--   sent_date: UTC day the message was sent.
with

messages as not materialized (
    select * from staging.stg_robofy__chat_messages
),

sessions as (
    select * from staging.stg_robofy__inbox_sessions
),

-- Everything but the message itself is worked out on narrow rows and joined to each message
-- once at the end, so neither the window nor a join's hash table holds message text (issue 8).
context as (
    select
        messages.chatbot_id,
        messages.session_id,
        messages.message_id,
        sessions.platform,
        sessions.website_url as session_website_url,
        epoch(
            messages.sent_at - lag(messages.sent_at) over (
                partition by messages.chatbot_id, messages.session_id
                order by messages.ordinal, messages.message_id
            )
        ) as seconds_since_previous,
    from messages
    left join sessions
        on messages.chatbot_id = sessions.chatbot_id
        and messages.session_id = sessions.session_id
),

joined as (
    select
        messages.*,
        context.platform,
        context.session_website_url,
        context.seconds_since_previous,
    from messages
    inner join context
        on messages.chatbot_id = context.chatbot_id
        and messages.session_id = context.session_id
        and messages.message_id = context.message_id
),

final as (
    select
        -- ids
        chatbot_id,
        session_id,
        message_id,
        project_id,

        -- attributes
        ordinal,
        role,
        role_raw,
        text,
        part_count,
        has_non_text,
        content_types,
        context_id,
        platform,
        coalesce(part_website_url, session_website_url) as website_url,

        -- measures
        seconds_since_previous,

        -- timestamps
        sent_at,
        sent_at::date as sent_date,
    from joined
)

select * from final
