-- grain: one row per (chatbot_id, activity_date)
-- description: One row per chatbot per UTC day with activity counted from transcripts, sessions and leads, beside the stats API's totals for reconciliation. Days come from either source.
-- incremental:
--   key: chatbot_id, activity_date
--   marts.sessions: chatbot_id, started_date
--   marts.messages: chatbot_id, sent_date
--   marts.leads: chatbot_id, created_date
--   marts.message_stats_daily: chatbot_id, stat_date
--   staging.stg_robofy__chatbots: lookup chatbot_id using name, project_id
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   activity_date: UTC day.
--   project_id: Project the chatbot belongs to.
--   chatbot_name: Name of the chatbot.
--   sessions_started: Sessions that started that day (from the inbox listing).
--   messages: Transcript messages sent that day (messages without a send time are not counted).
--   user_messages: Transcript messages sent by visitors that day.
--   ai_messages: Transcript messages sent by the assistant that day.
--   leads: Leads captured that day (from the leads listing).
--   has_stats: True when the stats API reported this day.
--   stats_total_messages: Messages that day according to the stats API; null when it has no row.
--   stats_user_messages: Visitor messages that day according to the stats API.
--   stats_ai_messages: Assistant messages that day according to the stats API.
--   stats_sessions: Sessions that day according to the stats API.
--   stats_leads: Leads that day according to the stats API.
--   stats_failed_messages: Failed messages that day according to the stats API.
--   messages_diff: messages minus stats_total_messages (0 when they agree); null without stats.
--   sessions_diff: sessions_started minus stats_sessions; null without stats.
--   leads_diff: leads minus stats_leads; null without stats.
with

sessions as (
    select * from marts.sessions
),

messages as (
    select * from marts.messages
),

leads as (
    select * from marts.leads
),

stats as (
    select * from marts.message_stats_daily
),

chatbots as (
    select * from staging.stg_robofy__chatbots
),

sessions_per_day as (
    select
        chatbot_id,
        started_date as activity_date,
        any_value(project_id) as project_id,
        count(*) as sessions_started,
    from sessions
    where started_date is not null
    group by chatbot_id, started_date
),

messages_per_day as (
    select
        chatbot_id,
        sent_date as activity_date,
        any_value(project_id) as project_id,
        count(*) as messages,
        count(*) filter (where role = 'user') as user_messages,
        count(*) filter (where role = 'assistant') as ai_messages,
    from messages
    where sent_date is not null
    group by chatbot_id, sent_date
),

leads_per_day as (
    select
        chatbot_id,
        created_date as activity_date,
        any_value(project_id) as project_id,
        count(*) as leads,
    from leads
    where created_date is not null
    group by chatbot_id, created_date
),

day_spine as (
    select chatbot_id, activity_date, project_id from sessions_per_day
    union
    select chatbot_id, activity_date, project_id from messages_per_day
    union
    select chatbot_id, activity_date, project_id from leads_per_day
    union
    select chatbot_id, stat_date as activity_date, project_id from stats
),

days as (
    select
        chatbot_id,
        activity_date,
        min(project_id) as project_id,
    from day_spine
    group by chatbot_id, activity_date
),

joined as (
    select
        days.chatbot_id,
        days.activity_date,
        coalesce(chatbots.project_id, days.project_id) as project_id,
        chatbots.name as chatbot_name,
        coalesce(sessions_per_day.sessions_started, 0) as sessions_started,
        coalesce(messages_per_day.messages, 0) as messages,
        coalesce(messages_per_day.user_messages, 0) as user_messages,
        coalesce(messages_per_day.ai_messages, 0) as ai_messages,
        coalesce(leads_per_day.leads, 0) as leads,
        stats.chatbot_id is not null as has_stats,
        stats.total_messages as stats_total_messages,
        stats.user_messages as stats_user_messages,
        stats.ai_messages as stats_ai_messages,
        stats.sessions as stats_sessions,
        stats.leads as stats_leads,
        stats.failed_messages as stats_failed_messages,
    from days
    left join chatbots on days.chatbot_id = chatbots.chatbot_id
    left join sessions_per_day
        on days.chatbot_id = sessions_per_day.chatbot_id
        and days.activity_date = sessions_per_day.activity_date
    left join messages_per_day
        on days.chatbot_id = messages_per_day.chatbot_id
        and days.activity_date = messages_per_day.activity_date
    left join leads_per_day
        on days.chatbot_id = leads_per_day.chatbot_id
        and days.activity_date = leads_per_day.activity_date
    left join stats
        on days.chatbot_id = stats.chatbot_id
        and days.activity_date = stats.stat_date
),

final as (
    select
        -- ids
        chatbot_id,
        activity_date,
        project_id,

        -- attributes
        chatbot_name,

        -- measures from transcripts and listings
        sessions_started,
        messages,
        user_messages,
        ai_messages,
        leads,

        -- measures from the stats API
        has_stats,
        stats_total_messages,
        stats_user_messages,
        stats_ai_messages,
        stats_sessions,
        stats_leads,
        stats_failed_messages,

        -- reconciliation
        messages - stats_total_messages as messages_diff,
        sessions_started - stats_sessions as sessions_diff,
        leads - stats_leads as leads_diff,
    from joined
)

select * from final
