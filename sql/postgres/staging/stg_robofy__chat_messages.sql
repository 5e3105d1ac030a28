-- PostgreSQL variant of sql/staging/stg_robofy__chat_messages.sql: the same columns and rows.
-- grain: one row per (chatbot_id, session_id, message_id)
-- The DuckDB model parses each payload with from_json and works on the parts with list
-- lambdas; here the parts are json_array_elements, aggregated per message in a lateral query.
with

latest as (
    select distinct on (chatbot_id, session_id, message_id) *
    from raw.robofy__chat_messages
    order by chatbot_id, session_id, message_id, _loaded_at desc
),

parsed as (
    select
        latest.*,
        lower(trim(_payload ->> 'role')) as role_lower,
        _payload ->> 'role' as role_raw,
        case
            when json_typeof(_payload -> 'parts') = 'array' then _payload -> 'parts'
            else '[]'::json
        end as parts
    from latest
),

final as (
    select
        -- ids
        parsed.chatbot_id,
        parsed.session_id,
        parsed.message_id,
        parsed.project_id,

        -- attributes
        parsed.ordinal,
        case
            when parsed.role_lower in ('user', 'visitor', 'inbound') then 'user'
            when parsed.role_lower in ('assistant', 'agent', 'outbound') then 'assistant'
            else parsed.role_lower
        end as role,
        parsed.role_raw,
        part_summary.text,
        part_summary.part_count,
        part_summary.text_part_count,
        part_summary.has_non_text,
        part_summary.content_types,
        part_summary.context_id,
        part_summary.part_website_url,

        -- timestamps
        parsed.sent_at,

        -- pipeline
        parsed._loaded_at as loaded_at,
        parsed._run_id as run_id
    from parsed
    cross join lateral (
        select
            nullif(
                string_agg(part_text, chr(10) order by position)
                    filter (where part_type = 'text' and part_text is not null),
                ''
            ) as text,
            count(*)::integer as part_count,
            (count(*) filter (where part_type = 'text'))::integer as text_part_count,
            count(*) filter (where part_type <> 'text') > 0 as has_non_text,
            string_agg(distinct part_type, ',' order by part_type) as content_types,
            (array_agg(context_id order by position)
                filter (where context_id is not null))[1] as context_id,
            (array_agg(website_url order by position)
                filter (where website_url is not null))[1] as part_website_url
        from (
            select
                position,
                -- a part without a type is treated as text
                coalesce(nullif(lower(trim(part ->> 'type')), ''), 'text') as part_type,
                part ->> 'text' as part_text,
                part -> 'data' ->> 'context_id' as context_id,
                part -> 'data' ->> 'website_url' as website_url
            from json_array_elements(parsed.parts) with ordinality as parts (part, position)
        ) as message_parts
    ) as part_summary
)

select * from final
