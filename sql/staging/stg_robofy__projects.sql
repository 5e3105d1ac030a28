-- grain: one row per project_id
-- description: Robofy projects (workspaces), typed from the raw snapshot, latest version per id.
-- columns:
--   project_id: Robofy project id.
--   name: Project name.
--   description: Free-text project description.
--   website_url: Website the project belongs to.
--   timezone: Project time zone as configured in Robofy (data is still stored in UTC).
--   created_at: When the project was created (UTC).
--   updated_at: When the project was last updated (UTC).
--   is_deleted: True when the project no longer appears in the API snapshot.
--   deleted_at: When the pipeline first saw the project missing (UTC).
--   loaded_at: When the pipeline loaded this version of the record (UTC).
--   run_id: Pipeline run that loaded this version of the record.
with

source as (
    select * from raw.robofy__projects
),

latest as (
    select *
    from source
    qualify row_number() over (partition by project_id order by _loaded_at desc) = 1
),

final as (
    select
        -- ids
        project_id,

        -- attributes
        _payload ->> 'name' as name,
        _payload ->> 'description' as description,
        _payload ->> 'website_url' as website_url,
        _payload ->> 'timezone' as timezone,

        -- timestamps
        created_at,
        updated_at,

        -- soft delete
        _is_deleted as is_deleted,
        _deleted_at as deleted_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from latest
)

select * from final
