-- Run once by the postgres image on an empty volume: a database for the PostgreSQL warehouse
-- (ROBOFY_WAREHOUSE_URL=postgresql+psycopg://dagster:<password>@postgres:5432/robofy),
-- beside Dagster's own database "dagster".
create database robofy;
