-- grain: one row per (chatbot_id, session_id, message_id)
-- description: Transcript messages with their parts parsed, latest version per key.
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

source as (
    select * from raw.robofy__chat_messages
),

latest as (
    select *
    from source
    qualify row_number() over (
        partition by chatbot_id, session_id, message_id order by _loaded_at desc
    ) = 1
),

parsed as (
    select
        *,
        lower(trim(_payload ->> 'role')) as role_lower,
        coalesce(
            try(from_json(
                _payload -> 'parts',
                '[{"type": "VARCHAR", "text": "VARCHAR",
                   "data": {"context_id": "VARCHAR", "website_url": "VARCHAR"}}]'
            )),
            []
        ) as parts,
    from latest
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
        _payload ->> 'role' as role_raw,
        nullif(
            array_to_string(
                list_transform(
                    list_filter(
                        list_zip(parts, part_types),
                        lambda z: z[2] = 'text' and z[1].text is not null
                    ),
                    lambda z: z[1].text
                ),
                chr(10)
            ),
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
