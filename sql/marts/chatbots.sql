-- grain: one row per chatbot_id
-- description: One row per Robofy chatbot (AI agent), deleted ones included (is_deleted), with activity totals.
-- incremental:
--   key: chatbot_id
--   staging.stg_robofy__chatbots: chatbot_id
--   staging.stg_robofy__projects: lookup project_id using name
--   marts.sessions: chatbot_id
--   staging.stg_robofy__leads: chatbot_id
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   project_id: Project the chatbot belongs to.
--   project_name: Name of the project the chatbot belongs to.
--   name: Chatbot name.
--   description: Free-text chatbot description.
--   chatbot_type: Robofy chatbot type code, as sent by the API.
--   access_type: Robofy access level code, as sent by the API.
--   avatar_url: URL of the chatbot avatar image.
--   llm_source: Robofy LLM source code, as sent by the API.
--   language: Chatbot language, as configured in Robofy.
--   is_ready: True when Robofy reports the chatbot as trained and ready.
--   file_usage: Number of files in the chatbot knowledge base.
--   link_usage: Number of links in the chatbot knowledge base.
--   storage_size_bytes: Knowledge base storage size in bytes.
--   session_count: Inbox sessions of the chatbot.
--   message_count: Transcript messages of the chatbot (of its listed sessions).
--   lead_count: Leads captured by the chatbot.
--   created_at: When the chatbot was created (UTC).
--   updated_at: When the chatbot was last updated (UTC).
--   first_session_at: When the chatbot's first session started (UTC; its first message when the listing has no start).
--   last_message_at: When the chatbot's latest message was sent (UTC; listing or transcript, whichever is later).
--   is_deleted: True when the chatbot no longer appears in the API (kept, not removed).
--   deleted_at: When the pipeline first saw the chatbot missing (UTC).
with

chatbots as (
    select * from staging.stg_robofy__chatbots
),

projects as (
    select * from staging.stg_robofy__projects
),

-- Conversations carry their transcript measures: the rollup never rescans every message.
sessions as (
    select * from marts.sessions
),

leads as (
    select * from staging.stg_robofy__leads
),

sessions_per_chatbot as (
    select
        chatbot_id,
        count(*) as session_count,
        sum(message_count) as message_count,
        min(started_at) as first_session_at,
        max(last_message_at) as last_message_at,
    from sessions
    group by chatbot_id
),

leads_per_chatbot as (
    select
        chatbot_id,
        count(*) as lead_count,
    from leads
    group by chatbot_id
),

final as (
    select
        -- ids
        chatbots.chatbot_id,
        chatbots.project_id,

        -- attributes
        projects.name as project_name,
        chatbots.name,
        chatbots.description,
        chatbots.chatbot_type,
        chatbots.access_type,
        chatbots.avatar_url,
        chatbots.llm_source,
        chatbots.language,
        chatbots.is_ready,
        chatbots.file_usage,
        chatbots.link_usage,
        chatbots.storage_size_bytes,

        -- measures
        coalesce(sessions_per_chatbot.session_count, 0) as session_count,
        coalesce(sessions_per_chatbot.message_count, 0)::bigint as message_count,
        coalesce(leads_per_chatbot.lead_count, 0) as lead_count,

        -- timestamps
        chatbots.created_at,
        chatbots.updated_at,
        sessions_per_chatbot.first_session_at,
        sessions_per_chatbot.last_message_at,

        -- soft delete
        chatbots.is_deleted,
        chatbots.deleted_at,
    from chatbots
    left join projects on chatbots.project_id = projects.project_id
    left join sessions_per_chatbot on chatbots.chatbot_id = sessions_per_chatbot.chatbot_id
    left join leads_per_chatbot on chatbots.chatbot_id = leads_per_chatbot.chatbot_id
)

select * from final
