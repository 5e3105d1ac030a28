-- grain: one row per (chatbot_id, session_id)
-- description: One row per inbox conversation (session) with transcript measures: message counts, turns, first response time, unanswered flag and leads.
-- incremental:
--   key: chatbot_id, session_id
--   staging.stg_robofy__inbox_sessions: chatbot_id, session_id
--   staging.stg_robofy__chat_messages: chatbot_id, session_id
--   staging.stg_robofy__leads: chatbot_id, session_id
--   staging.stg_robofy__chatbots: lookup chatbot_id using name
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   session_id: Session id, unique only within a chatbot (a UUID on the web, a phone number on WhatsApp).
--   project_id: Project the chatbot belongs to.
--   chatbot_name: Name of the chatbot that held the conversation.
--   platform: Channel, 'web' or 'whatsapp' (inferred from the session id when the API omits it).
--   status: Session status ('active' or 'closed').
--   visitor_name: Visitor profile name; personal data.
--   website_url: Website the conversation happened on (null on WhatsApp).
--   last_message_preview: Text of the last message, as listed by the API.
--   last_message_direction: Who sent the last message ('user' or 'assistant'), as listed by the API.
--   message_count: Messages in the transcript (0 when no transcript was loaded).
--   user_message_count: Messages sent by the visitor.
--   assistant_message_count: Messages sent by the assistant (AI or human agent).
--   turns: User-to-assistant exchanges: assistant messages that directly follow a user message.
--   first_response_seconds: Seconds from the first user message to the first assistant message after it; null when there is none.
--   is_unanswered: True when the visitor wrote and no assistant message followed.
--   duration_seconds: Seconds from started_at to last_message_at.
--   has_lead: True when a lead exists with this chatbot_id and session_id.
--   lead_count: Leads captured in this session.
--   started_at: When the session started (UTC); the first message time when the API omits it.
--   started_date: UTC day the session started.
--   first_message_at: When the first transcript message was sent (UTC).
--   last_message_at: When the last message was sent (UTC): the later of the listed time and the transcript.
with

sessions as (
    select * from staging.stg_robofy__inbox_sessions
),

messages as (
    select * from staging.stg_robofy__chat_messages
),

leads as (
    select * from staging.stg_robofy__leads
),

chatbots as (
    select * from staging.stg_robofy__chatbots
),

messages_in_order as (
    select
        chatbot_id,
        session_id,
        ordinal,
        role,
        sent_at,
        lag(role) over transcript as previous_role,
        min(case when role = 'user' then ordinal end) over (
            partition by chatbot_id, session_id
        ) as first_user_ordinal,
    from messages
    window transcript as (partition by chatbot_id, session_id order by ordinal, message_id)
),

transcript_measures as (
    select
        chatbot_id,
        session_id,
        count(*)::integer as message_count,
        count(*) filter (where role = 'user')::integer as user_message_count,
        count(*) filter (where role = 'assistant')::integer as assistant_message_count,
        count(*) filter (where role = 'assistant' and previous_role = 'user')::integer as turns,
        count(*) filter (where role = 'assistant' and ordinal > first_user_ordinal) > 0
            as has_reply,
        arg_min(sent_at, ordinal) filter (where role = 'user') as first_user_message_at,
        arg_min(sent_at, ordinal) filter (
            where role = 'assistant' and ordinal > first_user_ordinal
        ) as first_reply_at,
        min(sent_at) as first_message_at,
        max(sent_at) as last_sent_at,
    from messages_in_order
    group by chatbot_id, session_id
),

session_leads as (
    select
        chatbot_id,
        session_id,
        count(*)::integer as lead_count,
    from leads
    where session_id is not null
    group by chatbot_id, session_id
),

joined as (
    select
        sessions.*,
        chatbots.name as chatbot_name,
        transcript_measures.message_count,
        transcript_measures.user_message_count,
        transcript_measures.assistant_message_count,
        transcript_measures.turns,
        transcript_measures.has_reply,
        transcript_measures.first_user_message_at,
        transcript_measures.first_reply_at,
        transcript_measures.first_message_at,
        session_leads.lead_count,
        coalesce(sessions.started_at, transcript_measures.first_message_at) as session_started_at,
        greatest(sessions.last_message_at, transcript_measures.last_sent_at)
            as session_last_message_at,
    from sessions
    left join chatbots on sessions.chatbot_id = chatbots.chatbot_id
    left join transcript_measures
        on sessions.chatbot_id = transcript_measures.chatbot_id
        and sessions.session_id = transcript_measures.session_id
    left join session_leads
        on sessions.chatbot_id = session_leads.chatbot_id
        and sessions.session_id = session_leads.session_id
),

final as (
    select
        -- ids
        chatbot_id,
        session_id,
        project_id,

        -- attributes
        chatbot_name,
        platform,
        status,
        visitor_name,
        website_url,
        last_message_preview,
        last_message_direction,

        -- measures
        coalesce(message_count, 0) as message_count,
        coalesce(user_message_count, 0) as user_message_count,
        coalesce(assistant_message_count, 0) as assistant_message_count,
        coalesce(turns, 0) as turns,
        epoch(first_reply_at - first_user_message_at) as first_response_seconds,
        coalesce(user_message_count, 0) > 0 and not coalesce(has_reply, false) as is_unanswered,
        epoch(session_last_message_at - session_started_at) as duration_seconds,
        coalesce(lead_count, 0) > 0 as has_lead,
        coalesce(lead_count, 0) as lead_count,

        -- timestamps
        session_started_at as started_at,
        session_started_at::date as started_date,
        first_message_at,
        session_last_message_at as last_message_at,
    from joined
)

select * from final
