-- grain: one row per project_id
-- description: One row per Robofy project, deleted ones included (is_deleted), with activity totals.
-- incremental:
--   key: project_id
--   staging.stg_robofy__projects: project_id
--   marts.chatbots: project_id
-- columns:
--   project_id: Robofy project id.
--   name: Project name.
--   description: Free-text project description.
--   website_url: Website the project belongs to.
--   timezone: Project time zone as configured in Robofy (all timestamps here are UTC).
--   chatbot_count: Chatbots in the project that are not deleted.
--   session_count: Inbox sessions across the project's chatbots.
--   lead_count: Leads captured in the project.
--   created_at: When the project was created (UTC).
--   updated_at: When the project was last updated (UTC).
--   first_session_at: When the project's first session started (UTC).
--   last_message_at: When the latest message in any of the project's sessions was sent (UTC).
--   is_deleted: True when the project no longer appears in the API (kept, not removed).
--   deleted_at: When the pipeline first saw the project missing (UTC).
with

projects as (
    select * from staging.stg_robofy__projects
),

-- Rolled up from the chatbots mart, so the two cannot disagree.
chatbots as (
    select * from marts.chatbots
),

per_project as (
    select
        project_id,
        count(*) filter (where not is_deleted) as chatbot_count,
        sum(session_count)::bigint as session_count,
        sum(lead_count)::bigint as lead_count,
        min(first_session_at) as first_session_at,
        max(last_message_at) as last_message_at,
    from chatbots
    group by project_id
),

final as (
    select
        -- ids
        projects.project_id,

        -- attributes
        projects.name,
        projects.description,
        projects.website_url,
        projects.timezone,

        -- measures
        coalesce(per_project.chatbot_count, 0) as chatbot_count,
        coalesce(per_project.session_count, 0) as session_count,
        coalesce(per_project.lead_count, 0) as lead_count,

        -- timestamps
        projects.created_at,
        projects.updated_at,
        per_project.first_session_at,
        per_project.last_message_at,

        -- soft delete
        projects.is_deleted,
        projects.deleted_at,
    from projects
    left join per_project on projects.project_id = per_project.project_id
)

select * from final
