-- Issue 14: erase one person's events (playbooks/erase_subject.yml), with an audit row.
--
-- The warehouse part runs here in ONE transaction: the subject's events are deleted, the rollup
-- days they touched are rebuilt from the remaining events (dash_rollup_rebuild_period, V008), and
-- the audit row is written; the raw objects that held them are returned, for the playbook to
-- rewrite without them (sbw_ops.erase), which it then records with dw_erasure_finish(). The audit
-- keeps the SHA-256 of the identifier, never the identifier itself.

CREATE TABLE public.dw_erasures (
    erasure_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_kind text NOT NULL CONSTRAINT dw_erasures_kind_chk CHECK (subject_kind IN ('user_id', 'client_id')),
    subject_sha256 char(64) NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text NOT NULL DEFAULT session_user,
    warehouse_rows bigint NOT NULL,
    days_rebuilt integer NOT NULL,
    raw_objects integer NOT NULL,
    raw_keys text[] NOT NULL,  -- the objects to rewrite (keys hold no personal data)
    raw_objects_rewritten integer,
    raw_objects_deleted integer,
    failed_objects_deleted integer,
    finished_at timestamptz
);
REVOKE ALL ON public.dw_erasures FROM PUBLIC;
GRANT SELECT ON public.dw_erasures TO clickstream_reader;

CREATE FUNCTION public.dw_erase_subject(kind text, subject text)
RETURNS TABLE (erasure_id bigint, source_key text)
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
DECLARE
    audit_id bigint;
    deleted bigint;
    day timestamptz;
    days integer := 0;
    objects integer;
BEGIN
    IF kind IS NULL OR kind NOT IN ('user_id', 'client_id') THEN
        RAISE EXCEPTION 'dw_erase_subject: kind must be user_id or client_id (got %)', kind;
    END IF;
    IF subject IS NULL OR length(subject) = 0 THEN
        RAISE EXCEPTION 'dw_erase_subject: the % to erase is empty', kind;
    END IF;

    DROP TABLE IF EXISTS pg_temp.dw_erased;
    CREATE TEMP TABLE dw_erased ON COMMIT DROP AS
        SELECT e.event_id, e.event_timestamp, e.source_key
        FROM public.clickstream_events AS e
        WHERE (kind = 'user_id' AND e.user_id = subject)
           OR (kind = 'client_id' AND e.client_id = subject);

    DELETE FROM public.clickstream_events AS e
    USING pg_temp.dw_erased AS d
    WHERE e.event_id = d.event_id;
    GET DIAGNOSTICS deleted = ROW_COUNT;

    DELETE FROM public.dash_pending AS p
    USING pg_temp.dw_erased AS d
    WHERE p.event_id = d.event_id;

    FOR day IN SELECT DISTINCT public.dash_day_floor(d.event_timestamp) FROM pg_temp.dw_erased AS d ORDER BY 1 LOOP
        PERFORM public.dash_rollup_rebuild_period(day, day + interval '24 hours');
        days := days + 1;
    END LOOP;

    -- The objects of this erasure, and those of an earlier one of the same subject whose S3 step
    -- did not finish (re-running the playbook completes it).
    CREATE TEMP TABLE dw_erased_keys ON COMMIT DROP AS
        SELECT DISTINCT d.source_key FROM pg_temp.dw_erased AS d
        UNION
        SELECT unnest(x.raw_keys)
        FROM public.dw_erasures AS x
        WHERE x.finished_at IS NULL AND x.subject_kind = kind
          AND x.subject_sha256 = encode(sha256(convert_to(subject, 'UTF8')), 'hex');
    SELECT count(*) INTO objects FROM pg_temp.dw_erased_keys;
    INSERT INTO public.dw_erasures (subject_kind, subject_sha256, warehouse_rows, days_rebuilt, raw_objects, raw_keys)
    VALUES (kind, encode(sha256(convert_to(subject, 'UTF8')), 'hex'), deleted, days, objects,
            ARRAY(SELECT k.source_key FROM pg_temp.dw_erased_keys AS k ORDER BY 1))
    RETURNING dw_erasures.erasure_id INTO audit_id;

    RETURN QUERY
        SELECT audit_id, k.source_key FROM pg_temp.dw_erased_keys AS k ORDER BY k.source_key;
END
$fn$;

CREATE FUNCTION public.dw_erasure_finish(
    id bigint, rewritten integer, deleted integer, failed_deleted integer
) RETURNS void
LANGUAGE sql AS $fn$
    UPDATE public.dw_erasures AS x
    SET raw_objects_rewritten = coalesce(x.raw_objects_rewritten, CASE WHEN x.erasure_id = id THEN rewritten END),
        raw_objects_deleted = coalesce(x.raw_objects_deleted, CASE WHEN x.erasure_id = id THEN deleted END),
        failed_objects_deleted = coalesce(x.failed_objects_deleted, CASE WHEN x.erasure_id = id THEN failed_deleted END),
        finished_at = now()
    FROM public.dw_erasures AS this
    WHERE this.erasure_id = id AND x.finished_at IS NULL
      AND x.subject_kind = this.subject_kind AND x.subject_sha256 = this.subject_sha256;
$fn$;

REVOKE ALL ON FUNCTION public.dw_erase_subject(text, text), public.dw_erasure_finish(bigint, integer, integer, integer)
    FROM PUBLIC;
