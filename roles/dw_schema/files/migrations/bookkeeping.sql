-- Bookkeeping table of the warehouse migrations (see README.md in this directory).
-- Run before every apply, by the dw_schema role and by sbw_ops.migrate alike; idempotent.
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum char(64) NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON public.schema_migrations FROM PUBLIC;
