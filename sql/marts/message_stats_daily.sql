-- grain: one row per (chatbot_id, stat_date)
-- description: Daily message statistics per chatbot as reported by the Robofy stats API (days without traffic included with zeros).
-- incremental:
--   key: chatbot_id, stat_date
--   staging.stg_robofy__message_stats: chatbot_id, stat_date
--   staging.stg_robofy__chatbots: lookup chatbot_id using name
-- columns:
--   project_id: Project the chatbot belongs to.
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   chatbot_name: Name of the chatbot.
--   stat_date: Day the statistics are for.
--   total_messages: Messages that day, as reported by Robofy.
--   user_messages: Visitor messages that day, as reported by Robofy.
--   ai_messages: Assistant messages that day, as reported by Robofy.
--   sessions: Sessions that day, as reported by Robofy.
--   leads: Leads that day, as reported by Robofy.
--   failed_messages: Messages that failed that day, as reported by Robofy.
--   loaded_at: When the pipeline last loaded this day (recent days are re-pulled as Robofy restates them) (UTC).
with

stats as (
    select * from staging.stg_robofy__message_stats
),

chatbots as (
    select * from staging.stg_robofy__chatbots
),

final as (
    select
        -- ids
        stats.project_id,
        stats.chatbot_id,

        -- attributes
        chatbots.name as chatbot_name,
        stats.stat_date,

        -- measures
        stats.total_messages,
        stats.user_messages,
        stats.ai_messages,
        stats.sessions,
        stats.leads,
        stats.failed_messages,

        -- pipeline
        stats.loaded_at,
    from stats
    left join chatbots on stats.chatbot_id = chatbots.chatbot_id
)

select * from final
