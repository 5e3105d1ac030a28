-- grain: one row per chatbot_id
-- description: Robofy chatbots (AI agents), typed from the raw snapshot, latest version per id.
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   project_id: Project the chatbot belongs to.
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
--   created_at: When the chatbot was created (UTC).
--   updated_at: When the chatbot was last updated (UTC).
--   is_deleted: True when the chatbot no longer appears in the API snapshot.
--   deleted_at: When the pipeline first saw the chatbot missing (UTC).
--   loaded_at: When the pipeline loaded this version of the record (UTC).
--   run_id: Pipeline run that loaded this version of the record.
with

source as (
    select * from raw.robofy__chatbots
),

latest as (
    select *
    from source
    qualify row_number() over (partition by chatbot_id order by _loaded_at desc) = 1
),

final as (
    select
        -- ids
        chatbot_id,
        project_id,

        -- attributes
        _payload ->> 'name' as name,
        _payload ->> 'description' as description,
        try_cast(_payload ->> 'type' as integer) as chatbot_type,
        try_cast(_payload ->> 'access_type' as integer) as access_type,
        _payload ->> 'avatar_url' as avatar_url,
        try_cast(_payload ->> 'llm_source' as integer) as llm_source,
        _payload ->> 'language' as language,
        try_cast(_payload ->> 'is_ready' as boolean) as is_ready,
        try_cast(_payload ->> 'file_usage' as bigint) as file_usage,
        try_cast(_payload ->> 'link_usage' as bigint) as link_usage,
        try_cast(_payload ->> 'storage_size' as bigint) as storage_size_bytes,

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
