-- grain: one row per (chatbot_id, stat_date)
-- description: Daily message statistics as reported by the stats API, latest version per day.
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   stat_date: Day the statistics are for.
--   project_id: Project the chatbot belongs to.
--   total_messages: Messages that day, as reported by Robofy.
--   user_messages: Visitor messages that day, as reported by Robofy.
--   ai_messages: Assistant messages that day, as reported by Robofy.
--   sessions: Sessions that day, as reported by Robofy.
--   leads: Leads that day, as reported by Robofy.
--   failed_messages: Messages that failed that day, as reported by Robofy.
--   loaded_at: When the pipeline loaded this version of the record (UTC).
--   run_id: Pipeline run that loaded this version of the record.
with

source as (
    select * from raw.robofy__message_stats
),

latest as (
    select *
    from source
    qualify row_number() over (partition by chatbot_id, stat_date order by _loaded_at desc) = 1
),

final as (
    select
        -- ids
        chatbot_id,
        stat_date,
        project_id,

        -- measures
        try_cast(_payload ->> 'total_messages' as bigint) as total_messages,
        try_cast(_payload ->> 'user_messages' as bigint) as user_messages,
        try_cast(_payload ->> 'ai_messages' as bigint) as ai_messages,
        try_cast(_payload ->> 'sessions' as bigint) as sessions,
        try_cast(_payload ->> 'leads' as bigint) as leads,
        try_cast(_payload ->> 'failed_messages' as bigint) as failed_messages,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from latest
)

select * from final
