-- Run once, by the postgres image, when its volume is new: one database per server (both keep an
-- alembic_version table, so they cannot share one), owned by POSTGRES_USER.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
