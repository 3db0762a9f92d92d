-- Bookkeeping of the shop schema's migrations: the same protocol as the warehouse's
-- (roles/dw_schema/files/migrations/README.md): run before every apply; idempotent.
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum char(64) NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON public.schema_migrations FROM PUBLIC;
