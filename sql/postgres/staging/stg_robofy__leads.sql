-- PostgreSQL variant of sql/staging/stg_robofy__leads.sql: the same columns and rows.
-- grain: one row per lead_id
-- fields is json here (DuckDB: a list of structs): an array of objects with exactly the keys
-- field_name, field_type and field_value, as text, in API order.
with

latest as (
    select distinct on (lead_id) *
    from raw.robofy__leads
    order by lead_id, _loaded_at desc
),

final as (
    select
        -- ids
        lead_id,
        project_id,
        chatbot_id,
        nullif(trim(session_id), '') as session_id,

        -- attributes
        _payload ->> 'source' as source,
        _payload ->> 'page_url' as page_url,
        _payload ->> 'ip_address' as ip_address,
        coalesce(
            (
                select
                    json_agg(
                        json_build_object(
                            'field_name', field ->> 'field_name',
                            'field_type', field ->> 'field_type',
                            'field_value', field ->> 'field_value'
                        )
                        order by position
                    )
                from json_array_elements(
                    case
                        when json_typeof(_payload -> 'lead_data') = 'array'
                            then _payload -> 'lead_data'
                        else '[]'::json
                    end
                ) with ordinality as lead_data (field, position)
            ),
            '[]'::json
        ) as fields,

        -- timestamps
        created_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id
    from latest
)

select * from final
