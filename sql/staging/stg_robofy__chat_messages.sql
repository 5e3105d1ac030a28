-- grain: one row per (chatbot_id, session_id, message_id)
-- description: Transcript messages with their parts parsed, latest version per key.
-- incremental:
--   span: sent_at per chatbot_id, session_id
-- columns:
--   chatbot_id: Opaque chatbot (agent) id from Robofy.
--   session_id: Session the message belongs to (unique within a chatbot).
--   message_id: Message id from Robofy.
--   project_id: Project the chatbot belongs to.
--   ordinal: 0-based position of the message in the transcript, in API order.
--   role: Sender normalized to 'user' or 'assistant' (visitor/inbound = user, agent/outbound = assistant).
--   role_raw: Sender role exactly as sent by the API.
--   text: The message's text parts joined with a newline; null when it has no text.
--   part_count: Number of parts in the message.
--   text_part_count: Number of parts of type text.
--   has_non_text: True when the message has a part that is not text (image, buttons, ...).
--   content_types: Distinct part types of the message, sorted, comma-separated.
--   context_id: Context id of the first part that carries one.
--   part_website_url: Website URL of the first part that carries one.
--   sent_at: When the message was sent: the time of its first part (UTC).
--   loaded_at: When the pipeline loaded this version of the record (UTC).
--   run_id: Pipeline run that loaded this version of the record.
with

-- Not materialized: it is read twice, and a materialized copy would hold every payload.
-- A chunked full build reads a cut of the raw table that carries its rowid as a column;
-- columns(...) leaves that column out (on the raw table itself it excludes nothing).
source as not materialized (
    select rowid as _row_id, columns(lambda c: c != 'rowid') from raw.robofy__chat_messages
),

-- The latest version of each key is chosen on narrow rows, so the sort never carries a payload.
latest_rows as (
    select _row_id
    from source
    qualify row_number() over (
        partition by chatbot_id, session_id, message_id order by _loaded_at desc
    ) = 1
),

latest as (
    select * exclude (_row_id)
    from source
    semi join latest_rows on source._row_id = latest_rows._row_id
),

-- Each payload is parsed once. DuckDB's parser (yyjson) keeps every document of a vector in
-- memory until the vector is done, sized from the text: about 2.7 bytes per byte of compact
-- JSON, 1 per byte when whitespace follows the opening brace. So a large payload gets that
-- whitespace (JSON ignores it): a 10 MB message then needs 32 instead of 48 MB (issue 8).
parsed as (
    select
        * exclude (doc),
        lower(trim(doc.role)) as role_lower,
        doc.role as role_raw,
        coalesce(doc.parts, []) as parts,
    from (
        select
            * exclude (_payload),
            try(from_json(
                if(
                    strlen(_payload::varchar) > 100000 and starts_with(_payload::varchar, '{'),
                    '{  ' || substr(_payload::varchar, 2),
                    _payload::varchar
                ),
                '{"role": "VARCHAR", "parts": [{"type": "VARCHAR", "text": "VARCHAR",
                   "data": {"context_id": "VARCHAR", "website_url": "VARCHAR"}}]}'
            )) as doc,
        from latest
    )
),

typed_parts as (
    select
        *,
        -- a part without a type is treated as text
        list_transform(parts, lambda p: coalesce(nullif(lower(trim(p.type)), ''), 'text'))
            as part_types,
    from parsed
),

final as (
    select
        -- ids
        chatbot_id,
        session_id,
        message_id,
        project_id,

        -- attributes
        ordinal,
        case
            when role_lower in ('user', 'visitor', 'inbound') then 'user'
            when role_lower in ('assistant', 'agent', 'outbound') then 'assistant'
            else role_lower
        end as role,
        role_raw,
        nullif(
            case
                -- Most messages have one part: its text is taken as is, because every list
                -- function below copies the texts it touches (twice the memory for a 10 MB one).
                when len(parts) = 1 then if(part_types[1] = 'text', parts[1].text, null)
                else array_to_string(
                    list_transform(
                        list_filter(
                            list_zip(parts, part_types),
                            lambda z: z[2] = 'text' and z[1].text is not null
                        ),
                        lambda z: z[1].text
                    ),
                    chr(10)
                )
            end,
            ''
        ) as text,
        len(parts)::integer as part_count,
        len(list_filter(part_types, lambda t: t = 'text'))::integer as text_part_count,
        len(list_filter(part_types, lambda t: t <> 'text')) > 0 as has_non_text,
        nullif(array_to_string(list_sort(list_distinct(part_types)), ','), '') as content_types,
        list_filter(
            list_transform(parts, lambda p: p.data.context_id), lambda v: v is not null
        )[1] as context_id,
        list_filter(
            list_transform(parts, lambda p: p.data.website_url), lambda v: v is not null
        )[1] as part_website_url,

        -- timestamps
        sent_at,

        -- pipeline
        _loaded_at as loaded_at,
        _run_id as run_id,
    from typed_parts
)

select * from final
