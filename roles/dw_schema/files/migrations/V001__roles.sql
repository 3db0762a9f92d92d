-- Group roles of the warehouse (NOLOGIN). Login users (sbw_etl, sbw_dashboard) and their
-- passwords are created outside the migrations (dw_schema role, test fixtures) as members.
-- Roles are cluster-wide: guarded so that a second database in the same cluster (or a
-- concurrent apply) does not fail.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'clickstream_writer') THEN
        BEGIN
            CREATE ROLE clickstream_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'clickstream_reader') THEN
        BEGIN
            CREATE ROLE clickstream_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- Nobody but the owner and the two groups may connect; only the writer may create temporary
-- tables (its COPY staging table). PUBLIC's default CONNECT/TEMPORARY are revoked.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO clickstream_writer', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO clickstream_reader', current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO clickstream_writer, clickstream_reader;
