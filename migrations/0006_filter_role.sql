-- A least-privilege role for user-written SQL filters (where=, --where, the web's SQL box,
-- classify/flag filters). clipsql runs every filter on a connection that logs in as
-- clipsql_filter (clipsql/database/filter_login.py), so a filter can read the clipsql tables
-- (and whatever else you GRANT to clipsql_filter) but cannot call what the connecting role
-- could: file access (pg_read_file, pg_ls_dir, lo_import), signalling backends,
-- pg_switch_wal, pg_stat_reset... See docs/security-filters.md.
--
-- Roles are cluster-wide: the role is created once, only if absent, and only when the
-- migrating role may create roles. Without CREATEROLE (a managed server, a plain owner
-- role) this migration grants what it can and otherwise does nothing: clipsql then refuses
-- every filter, saying what to run (clipsql admin sql, as an administrator); it never runs
-- a filter as the connecting role.

DO $$
DECLARE
    me_can_create boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter') THEN
        SELECT rolsuper OR rolcreaterole INTO me_can_create
          FROM pg_roles WHERE rolname = current_user;
        IF NOT coalesce(me_can_create, false) THEN
            RAISE NOTICE 'clipsql: % may not create roles; SQL filters will run as the '
                         'connecting role (see docs/security-filters.md)', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE clipsql_filter LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
                NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this cluster created it at the same moment
        END;
    END IF;

    -- Per database: what a filter may read. Add your own tables with
    -- GRANT SELECT ON my_table TO clipsql_filter.
    GRANT USAGE ON SCHEMA clipsql TO clipsql_filter;
    GRANT SELECT ON clipsql.images, clipsql.image_labels, clipsql.labels, clipsql.label_sets,
                    clipsql.text_embeddings, clipsql.model, clipsql.failures
       TO clipsql_filter;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA clipsql TO clipsql_filter;
    -- and what later migrations of this role add
    ALTER DEFAULT PRIVILEGES IN SCHEMA clipsql GRANT SELECT ON TABLES TO clipsql_filter;
    ALTER DEFAULT PRIVILEGES IN SCHEMA clipsql GRANT EXECUTE ON FUNCTIONS TO clipsql_filter;

    -- A non-superuser owner must be a member to SET ROLE (a superuser always may).
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        BEGIN
            GRANT clipsql_filter TO CURRENT_USER;
        EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
            RAISE NOTICE 'clipsql: cannot make % a member of clipsql_filter; ask an admin to '
                         'GRANT clipsql_filter TO %', current_user, current_user;
        END;
    END IF;
END
$$;
