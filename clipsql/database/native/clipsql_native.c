/*
 * clipsql_native: embed any text inside PostgreSQL, with the collection's own model.
 *
 * Backends never load a model. A backend that needs a text's embedding puts the text into a
 * slot of one shared-memory area (a named DSM segment, so no shared_preload_libraries is
 * needed), wakes the database's inference worker and sleeps on its own latch until the slot
 * is answered or its deadline passes. The worker is a dynamic background worker, one per
 * database in use, started by the first backend that needs it: it hosts an embedded Python
 * interpreter (libpython, loaded with dlopen only in the worker) that runs clipsql's own
 * text engine (clipsql.models.in_database: ONNX Runtime, the project's tokenizer), so the
 * vector is the one the Python API gives. Texts waiting together are embedded in one batch.
 * The worker stores what it embedded in clipsql.text_embeddings (the one text cache) when the
 * caller may write there, and exits after an idle period.
 *
 * Declarations of the few Python C API functions used are written here from Python's
 * documentation (the stable ABI), resolved with dlsym: no Python header is needed.
 *
 * Settings (superuser only; clipsql writes them with ALTER SYSTEM):
 *   clipsql.python_library   path of libpython the worker loads
 *   clipsql.python_home      PYTHONHOME for it (the base installation)
 *   clipsql.python_path      sys.path for it, a JSON list
 *   clipsql.environment      clipsql's environment variables for it (CLIPSQL_HOME, CLIPSQL_CACHE,
 *                            ...), a JSON object
 *   clipsql.embed_timeout    ms a call waits for its vector (first call included)
 *   clipsql.max_text_bytes   longest text a caller may send
 *   clipsql.worker_idle_timeout  seconds an idle worker stays up
 */
#include "postgres.h"

#include <dlfcn.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm_registry.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "funcapi.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

PG_MODULE_MAGIC;

#define NSLOTS 32
#define NWORKERS 16
#define MAX_TEXT 4096
#define MAX_DIM 2048
#define MAX_BATCH 16
#define ERROR_LEN 512

enum SlotState
{
	SLOT_FREE = 0,
	SLOT_PENDING,
	SLOT_BUSY,
	SLOT_DONE,
	SLOT_FAILED,
	SLOT_ABANDONED
};

enum SlotKind
{
	KIND_QUERY = 0,				/* the query engine: the vector a Python search ranks with */
	KIND_FP32,					/* fp32: texts stored on purpose, labels */
	KIND_LOGITS					/* the model's logit scale and bias */
};

enum WorkerState
{
	WORKER_NONE = 0,
	WORKER_STARTING,
	WORKER_READY
};

typedef struct Slot
{
	int			state;
	int			kind;
	Oid			db;
	Oid			user;			/* the caller's role: may it write the text cache? */
	int			requester;		/* ProcNumber of the waiting backend */
	int			len;
	char		text[MAX_TEXT + 1];
	int			dim;
	float4		vec[MAX_DIM];
	char		error[ERROR_LEN];
} Slot;

typedef struct WorkerEntry
{
	Oid			db;
	int			state;
	int			proc;
	pid_t		pid;
	TimestampTz since;
	uint64		served;
} WorkerEntry;

typedef struct Shared
{
	slock_t		mutex;
	WorkerEntry workers[NWORKERS];
	Slot		slots[NSLOTS];
} Shared;

/* settings */
static char *python_library = NULL;
static char *python_home = NULL;
static char *python_path = NULL;
static char *worker_environment = NULL;
static int	embed_timeout_ms = 60000;
static int	max_text_bytes = 2048;
static int	worker_idle_s = 600;

static Shared *shared = NULL;
static int	my_slot = -1;		/* the slot this backend waits on, released at exit */

void		_PG_init(void);
PGDLLEXPORT void clipsql_inference_main(Datum arg);

PG_FUNCTION_INFO_V1(clipsql_embed_text);
PG_FUNCTION_INFO_V1(clipsql_model_logits);
PG_FUNCTION_INFO_V1(clipsql_inference_workers);

void
_PG_init(void)
{
	DefineCustomStringVariable("clipsql.python_library",
							   "libpython that clipsql's inference worker loads.",
							   NULL, &python_library, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("clipsql.python_home",
							   "PYTHONHOME of clipsql's inference worker.",
							   NULL, &python_home, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("clipsql.python_path",
							   "sys.path of clipsql's inference worker (a JSON list).",
							   NULL, &python_path, "[]", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("clipsql.environment",
							   "clipsql's environment variables in its inference worker (JSON).",
							   NULL, &worker_environment, "{}", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("clipsql.embed_timeout",
							"How long a call waits for a text's embedding.",
							NULL, &embed_timeout_ms, 60000, 100, 3600 * 1000, PGC_SUSET,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("clipsql.max_text_bytes",
							"The longest text a caller may have embedded, in bytes.",
							NULL, &max_text_bytes, 2048, 1, MAX_TEXT, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("clipsql.worker_idle_timeout",
							"Seconds an idle inference worker stays up (its model loaded).",
							NULL, &worker_idle_s, 600, 1, 7 * 24 * 3600, PGC_SUSET,
							GUC_UNIT_S, NULL, NULL, NULL);
	MarkGUCPrefixReserved("clipsql");
}

static void
init_shared(void *ptr)
{
	Shared	   *s = (Shared *) ptr;

	memset(s, 0, sizeof(Shared));
	SpinLockInit(&s->mutex);
}

static Shared *
attach(void)
{
	bool		found;

	if (shared == NULL)
		shared = GetNamedDSMSegment("clipsql_native", sizeof(Shared), init_shared, &found);
	return shared;
}

static Latch *
latch_of(int proc)
{
	return &GetPGProcByNumber(proc)->procLatch;
}

/* ---------------------------------------------------------------- backends */

/* A backend that leaves while it waits gives its slot back (or lets the worker do it). */
static void
release_slot(int code, Datum arg)
{
	Slot	   *slot;

	if (my_slot < 0 || shared == NULL)
		return;
	slot = &shared->slots[my_slot];
	SpinLockAcquire(&shared->mutex);
	if (slot->state == SLOT_BUSY)
		slot->state = SLOT_ABANDONED;
	else if (slot->state != SLOT_ABANDONED)
		slot->state = SLOT_FREE;
	SpinLockRelease(&shared->mutex);
	my_slot = -1;
}

static WorkerEntry *
entry_for(Oid db)
{
	for (int i = 0; i < NWORKERS; i++)
		if (shared->workers[i].state != WORKER_NONE && shared->workers[i].db == db)
			return &shared->workers[i];
	return NULL;
}

/* Start this database's worker unless it runs or is starting (a start that never came up
 * within the deadline is tried again). */
static void
ensure_worker(void)
{
	WorkerEntry *w;
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	pid_t		pid;
	Dl_info		info;
	BgwHandleStatus status;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&shared->mutex);
	w = entry_for(MyDatabaseId);
	if (w != NULL && (w->state == WORKER_READY ||
					  !TimestampDifferenceExceeds(w->since, now, embed_timeout_ms)))
	{
		SpinLockRelease(&shared->mutex);
		return;
	}
	if (w == NULL)
	{
		for (int i = 0; i < NWORKERS && w == NULL; i++)
			if (shared->workers[i].state == WORKER_NONE)
				w = &shared->workers[i];
	}
	if (w == NULL)
	{
		SpinLockRelease(&shared->mutex);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("clipsql: in-database models already run for %d databases", NWORKERS)));
	}
	w->db = MyDatabaseId;
	w->state = WORKER_STARTING;
	w->since = now;
	w->pid = 0;
	SpinLockRelease(&shared->mutex);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	if (dladdr((void *) clipsql_inference_main, &info) == 0 || info.dli_fname == NULL)
		ereport(ERROR, (errmsg("clipsql: cannot find the path of clipsql_native")));
	strlcpy(bgw.bgw_library_name, info.dli_fname, sizeof(bgw.bgw_library_name));
	strlcpy(bgw.bgw_function_name, "clipsql_inference_main", sizeof(bgw.bgw_function_name));
	snprintf(bgw.bgw_name, BGW_MAXLEN, "clipsql inference for database %u", MyDatabaseId);
	strlcpy(bgw.bgw_type, "clipsql inference", sizeof(bgw.bgw_type));
	bgw.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		SpinLockAcquire(&shared->mutex);
		w->state = WORKER_NONE;
		SpinLockRelease(&shared->mutex);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("clipsql: could not start the inference worker"),
				 errhint("raise max_worker_processes: every background worker slot is in use")));
	}
	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status != BGWH_STARTED)
	{
		SpinLockAcquire(&shared->mutex);
		if (w->db == MyDatabaseId && w->state == WORKER_STARTING)
			w->state = WORKER_NONE;
		SpinLockRelease(&shared->mutex);
		ereport(ERROR,
				(errmsg("clipsql: the inference worker did not start"),
				 errhint("see the server's log")));
	}
}

/* Put the text into a free slot (waiting for one while all are busy), wait for the answer;
 * returns the slot index, answered (DONE), owned by this backend until released. */
static int
ask(const char *text, int len, int kind)
{
	TimestampTz deadline;
	int			idx = -1;
	Slot	   *slot;
	static bool exit_hook = false;

	attach();
	if (!exit_hook)
	{
		before_shmem_exit(release_slot, (Datum) 0);
		exit_hook = true;
	}
	ensure_worker();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), embed_timeout_ms);

	PG_TRY();
	{
		for (;;)
		{
			long		left;
			WorkerEntry *w;
			int			wake = -1;

			SpinLockAcquire(&shared->mutex);
			if (idx < 0)
			{
				for (int i = 0; i < NSLOTS; i++)
				{
					if (shared->slots[i].state == SLOT_FREE)
					{
						idx = i;
						my_slot = i;
						slot = &shared->slots[i];
						slot->state = SLOT_PENDING;
						slot->kind = kind;
						slot->db = MyDatabaseId;
						slot->user = GetUserId();
						slot->requester = MyProcNumber;
						slot->len = len;
						memcpy(slot->text, text, len);
						slot->text[len] = '\0';
						slot->dim = 0;
						slot->error[0] = '\0';
						break;
					}
				}
			}
			w = entry_for(MyDatabaseId);
			if (idx >= 0 && w != NULL && w->state == WORKER_READY)
				wake = w->proc;
			if (idx >= 0 && (shared->slots[idx].state == SLOT_DONE ||
							 shared->slots[idx].state == SLOT_FAILED))
			{
				SpinLockRelease(&shared->mutex);
				break;
			}
			SpinLockRelease(&shared->mutex);
			if (wake >= 0)
				SetLatch(latch_of(wake));
			if (w == NULL)
				ensure_worker();	/* it exited (idle) after this call started */

			left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			if (left <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("clipsql: embedding the text took longer than clipsql.embed_timeout (%d ms)",
								embed_timeout_ms),
						 errhint("the first call in a database loads the model; see the server's log")));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(left, 1000L), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		release_slot(0, (Datum) 0);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return idx;
}

static void
check_text(text *t, int *len)
{
	*len = VARSIZE_ANY_EXHDR(t);
	if (*len == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("clipsql: the text query is empty")));
	if (*len > max_text_bytes)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("clipsql: the text query is %d bytes, over clipsql.max_text_bytes (%d)",
							   *len, max_text_bytes)));
}

static void
raise_failed(Slot *slot)
{
	char		msg[ERROR_LEN];

	strlcpy(msg, slot->error, sizeof(msg));
	release_slot(0, (Datum) 0);
	ereport(ERROR, (errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION), errmsg("clipsql: %s", msg)));
}

/* clipsql_native.embed(query text, fp32 boolean) RETURNS real[] */
Datum
clipsql_embed_text(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	bool		fp32 = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	int			len;
	int			idx;
	Slot	   *slot;
	Datum	   *elems;
	ArrayType  *result;
	int			dim;

	check_text(t, &len);
	idx = ask(VARDATA_ANY(t), len, fp32 ? KIND_FP32 : KIND_QUERY);
	slot = &shared->slots[idx];
	if (slot->state == SLOT_FAILED)
		raise_failed(slot);
	dim = slot->dim;
	elems = palloc(sizeof(Datum) * dim);
	for (int i = 0; i < dim; i++)
		elems[i] = Float4GetDatum(slot->vec[i]);
	release_slot(0, (Datum) 0);
	result = construct_array_builtin(elems, dim, FLOAT4OID);
	PG_RETURN_ARRAYTYPE_P(result);
}

/* clipsql_native.logits() RETURNS real[]: {logit_scale, logit_bias or NaN}. Asked once per
 * transaction (label_images calls it for every image). */
Datum
clipsql_model_logits(PG_FUNCTION_ARGS)
{
	static TimestampTz cached_for = 0;
	static float4 cached[2];
	Datum		elems[2];

	if (cached_for == 0 || cached_for != GetCurrentTransactionStartTimestamp())
	{
		int			idx = ask("", 0, KIND_LOGITS);
		Slot	   *slot = &shared->slots[idx];

		if (slot->state == SLOT_FAILED)
			raise_failed(slot);
		cached[0] = slot->vec[0];
		cached[1] = slot->vec[1];
		release_slot(0, (Datum) 0);
		cached_for = GetCurrentTransactionStartTimestamp();
	}
	elems[0] = Float4GetDatum(cached[0]);
	elems[1] = Float4GetDatum(cached[1]);
	PG_RETURN_ARRAYTYPE_P(construct_array_builtin(elems, 2, FLOAT4OID));
}

/* clipsql_native.workers() RETURNS TABLE(database oid, pid int, state text, served bigint) */
Datum
clipsql_inference_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkerEntry copy[NWORKERS];
	static const char *names[] = {"none", "starting", "ready"};

	InitMaterializedSRF(fcinfo, 0);
	attach();
	SpinLockAcquire(&shared->mutex);
	memcpy(copy, shared->workers, sizeof(copy));
	SpinLockRelease(&shared->mutex);
	for (int i = 0; i < NWORKERS; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (copy[i].state == WORKER_NONE)
			continue;
		values[0] = ObjectIdGetDatum(copy[i].db);
		values[1] = Int32GetDatum((int32) copy[i].pid);
		values[2] = CStringGetTextDatum(names[copy[i].state]);
		values[3] = Int64GetDatum((int64) copy[i].served);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---------------------------------------------------------------- the worker */

typedef struct _object PyObject;
typedef ssize_t Py_ssize_t;

static struct
{
	void		(*InitializeEx) (int);
	int			(*RunSimpleString) (const char *);
	PyObject   *(*ImportModule) (const char *);
	PyObject   *(*GetAttrString) (PyObject *, const char *);
	PyObject   *(*UnicodeFromString) (const char *);
	PyObject   *(*BytesFromStringAndSize) (const char *, Py_ssize_t);
	PyObject   *(*LongFromLong) (long);
	PyObject   *(*CallFunctionObjArgs) (PyObject *,...);
	int			(*BytesAsStringAndSize) (PyObject *, char **, Py_ssize_t *);
	void		(*DecRef) (PyObject *);
	void		(*ErrPrint) (void);
}			py;

static PyObject *py_embed = NULL;

/* What the worker embedded, copied before the slots are answered (a backend reuses its slot
 * as soon as it has read it), for the text cache. */
static struct
{
	int			n;
	int			dim;
	Oid			user[MAX_BATCH];
	char		text[MAX_BATCH][MAX_TEXT + 1];
	float4		vec[MAX_BATCH][MAX_DIM];
}			done;
static char py_failure[ERROR_LEN] = "";

static bool
load_symbol(void *lib, void **fn, const char *name)
{
	*fn = dlsym(lib, name);
	if (*fn == NULL)
		snprintf(py_failure, sizeof(py_failure), "libpython has no %s", name);
	return *fn != NULL;
}

/* Start Python and import clipsql's engine; false with py_failure set when it cannot. */
static bool
start_python(void)
{
	void	   *lib;
	PyObject   *module;

	if (py_embed != NULL)
		return true;
	if (python_library == NULL || python_library[0] == '\0')
	{
		strlcpy(py_failure, "clipsql.python_library is not set: run any clipsql command once "
				"against this server as its owner", sizeof(py_failure));
		return false;
	}
	lib = dlopen(python_library, RTLD_NOW | RTLD_GLOBAL);
	if (lib == NULL)
	{
		snprintf(py_failure, sizeof(py_failure), "cannot load %s: %s", python_library, dlerror());
		return false;
	}
	if (!load_symbol(lib, (void **) &py.InitializeEx, "Py_InitializeEx") ||
		!load_symbol(lib, (void **) &py.RunSimpleString, "PyRun_SimpleString") ||
		!load_symbol(lib, (void **) &py.ImportModule, "PyImport_ImportModule") ||
		!load_symbol(lib, (void **) &py.GetAttrString, "PyObject_GetAttrString") ||
		!load_symbol(lib, (void **) &py.UnicodeFromString, "PyUnicode_FromString") ||
		!load_symbol(lib, (void **) &py.BytesFromStringAndSize, "PyBytes_FromStringAndSize") ||
		!load_symbol(lib, (void **) &py.LongFromLong, "PyLong_FromLong") ||
		!load_symbol(lib, (void **) &py.CallFunctionObjArgs, "PyObject_CallFunctionObjArgs") ||
		!load_symbol(lib, (void **) &py.BytesAsStringAndSize, "PyBytes_AsStringAndSize") ||
		!load_symbol(lib, (void **) &py.DecRef, "Py_DecRef") ||
		!load_symbol(lib, (void **) &py.ErrPrint, "PyErr_Print"))
		return false;
	if (python_home && python_home[0])
		setenv("PYTHONHOME", python_home, 1);
	setenv("CLIPSQL_PYTHON_PATH", python_path ? python_path : "[]", 1);
	setenv("CLIPSQL_ENVIRONMENT", worker_environment ? worker_environment : "{}", 1);
	setenv("PYTHONNOUSERSITE", "1", 1);
	py.InitializeEx(0);			/* 0: PostgreSQL keeps its own signal handlers */
	if (py.RunSimpleString("import json, os, sys\n"
						   "sys.path[:] = json.loads(os.environ['CLIPSQL_PYTHON_PATH']) + sys.path\n"
						   "os.environ.update(json.loads(os.environ['CLIPSQL_ENVIRONMENT']))\n"
						   "sys.argv = ['clipsql-inference']\n") != 0)
	{
		strlcpy(py_failure, "Python's start-up code failed (see the server's log)",
				sizeof(py_failure));
		return false;
	}
	module = py.ImportModule("clipsql.models.in_database");
	if (module == NULL)
	{
		py.ErrPrint();
		strlcpy(py_failure, "cannot import clipsql.models.in_database in the inference worker "
				"(see the server's log)", sizeof(py_failure));
		return false;
	}
	py_embed = py.GetAttrString(module, "answer");
	py.DecRef(module);
	if (py_embed == NULL)
	{
		py.ErrPrint();
		strlcpy(py_failure, "clipsql.models.in_database has no answer()", sizeof(py_failure));
		return false;
	}
	return true;
}

/* The bound model (spec, a newline, the weights' recorded identity), read in its own
 * transaction; false with *why set if none. */
static bool
bound_spec(char *spec, size_t size, char *why, size_t why_size)
{
	bool		ok = false;
	MemoryContext oldcontext = CurrentMemoryContext;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute("SELECT spec || E'\\n' || pretrained FROM clipsql.model", true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char	   *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (value != NULL)
			{
				strlcpy(spec, value, size);
				ok = true;
			}
		}
		if (!ok)
			strlcpy(why, "no model is bound to this collection yet: load images first", why_size);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		snprintf(why, why_size, "cannot read the bound model: %s", edata->message);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	return ok;
}

/* Store the embedded texts in clipsql.text_embeddings, the one text cache: only where the
 * caller's role may insert there, and only while the same model is bound. */
static void
store(const char *spec)
{
	MemoryContext oldcontext = CurrentMemoryContext;

	if (done.n == 0)
		return;
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		Oid			types[4] = {TEXTOID, FLOAT4ARRAYOID, TEXTOID, OIDOID};

		SPI_connect();
		for (int j = 0; j < done.n; j++)
		{
			Datum		values[4];
			Datum	   *elems = palloc(sizeof(Datum) * done.dim);

			for (int i = 0; i < done.dim; i++)
				elems[i] = Float4GetDatum(done.vec[j][i]);
			values[0] = CStringGetTextDatum(done.text[j]);
			values[1] = PointerGetDatum(construct_array_builtin(elems, done.dim, FLOAT4OID));
			values[2] = CStringGetTextDatum(spec);
			values[3] = ObjectIdGetDatum(done.user[j]);
			SPI_execute_with_args(
				"INSERT INTO clipsql.text_embeddings (query, embedding) "
				"SELECT $1, $2::halfvec WHERE EXISTS (SELECT 1 FROM clipsql.model m "
				"WHERE m.spec || E'\\n' || m.pretrained = $3) "
				"AND has_table_privilege($4, 'clipsql.text_embeddings', 'INSERT') "
				"ON CONFLICT (query) DO NOTHING",
				4, types, values, NULL, false, 0);
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		EmitErrorReport();		/* a cache that could not be written: the vectors were sent */
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	done.n = 0;
}

static void
fail_all(int *idx, int n, const char *why)
{
	SpinLockAcquire(&shared->mutex);
	for (int j = 0; j < n; j++)
	{
		Slot	   *slot = &shared->slots[idx[j]];

		if (slot->state == SLOT_ABANDONED)
			slot->state = SLOT_FREE;
		else
		{
			strlcpy(slot->error, why, ERROR_LEN);
			slot->state = SLOT_FAILED;
		}
	}
	SpinLockRelease(&shared->mutex);
}

/* Embed one batch of one kind. Python answers b"V" + 2 float32 (logit scale, bias) +
 * n * dim float32, or b"E" + a message. */
static void
embed_batch(int *idx, int n, int kind, const char *spec)
{
	StringInfoData joined;
	PyObject   *a_spec, *a_texts, *a_kind, *a_fp32, *answer;
	char	   *buf;
	Py_ssize_t	size;
	int			dim = 0;

	done.n = 0;
	if (!start_python())
	{
		fail_all(idx, n, py_failure);
		return;
	}
	initStringInfo(&joined);
	for (int j = 0; j < n; j++)
	{
		if (j > 0)
			appendStringInfoChar(&joined, '\0');
		appendBinaryStringInfo(&joined, shared->slots[idx[j]].text, shared->slots[idx[j]].len);
	}
	a_spec = py.UnicodeFromString(spec);
	a_texts = py.BytesFromStringAndSize(joined.data, joined.len);
	a_kind = py.LongFromLong(kind == KIND_LOGITS ? 0 : n);
	a_fp32 = py.LongFromLong(kind == KIND_FP32 ? 1 : 0);
	answer = NULL;
	if (a_spec && a_texts && a_kind && a_fp32)
		answer = py.CallFunctionObjArgs(py_embed, a_spec, a_texts, a_kind, a_fp32, NULL);
	if (a_spec)
		py.DecRef(a_spec);
	if (a_texts)
		py.DecRef(a_texts);
	if (a_kind)
		py.DecRef(a_kind);
	if (a_fp32)
		py.DecRef(a_fp32);
	pfree(joined.data);
	if (answer == NULL || py.BytesAsStringAndSize(answer, &buf, &size) != 0 || size < 1)
	{
		if (answer == NULL)
			py.ErrPrint();
		fail_all(idx, n, "the inference worker's Python call failed (see the server's log)");
		if (answer)
			py.DecRef(answer);
		return;
	}
	if (buf[0] != 'V')
	{
		char		msg[ERROR_LEN];

		snprintf(msg, sizeof(msg), "%.*s", (int) Min(size - 1, ERROR_LEN - 1), buf + 1);
		fail_all(idx, n, msg);
		py.DecRef(answer);
		return;
	}
	if (kind != KIND_LOGITS)
		dim = (int) ((size - 1 - 8) / (4 * n));
	done.n = 0;
	if (kind != KIND_LOGITS && (dim <= 0 || dim > MAX_DIM || (size - 9) != (Py_ssize_t) dim * 4 * n))
	{
		fail_all(idx, n, "the model answered vectors of an unexpected size");
		py.DecRef(answer);
		return;
	}
	SpinLockAcquire(&shared->mutex);
	for (int j = 0; j < n; j++)
	{
		Slot	   *slot = &shared->slots[idx[j]];

		if (slot->state == SLOT_ABANDONED)
		{
			slot->state = SLOT_FREE;
			continue;
		}
		if (kind == KIND_LOGITS)
		{
			memcpy(slot->vec, buf + 1, 8);
			slot->dim = 0;
		}
		else
		{
			memcpy(slot->vec, buf + 9 + (Size) j * dim * 4, (Size) dim * 4);
			slot->dim = dim;
			memcpy(done.vec[done.n], slot->vec, (Size) dim * 4);
			memcpy(done.text[done.n], slot->text, slot->len + 1);
			done.user[done.n] = slot->user;
			done.dim = dim;
			done.n++;
		}
		slot->state = SLOT_DONE;
	}
	SpinLockRelease(&shared->mutex);
	py.DecRef(answer);
}

static void
worker_exit(int code, Datum arg)
{
	WorkerEntry *w;

	SpinLockAcquire(&shared->mutex);
	w = entry_for(MyDatabaseId);
	if (w != NULL && w->pid == MyProcPid)
		w->state = WORKER_NONE;
	/* waiting backends see the entry gone and start a new worker */
	for (int i = 0; i < NSLOTS; i++)
	{
		Slot	   *slot = &shared->slots[i];

		if (slot->db == MyDatabaseId && slot->state == SLOT_BUSY)
		{
			strlcpy(slot->error, "the inference worker stopped", ERROR_LEN);
			slot->state = SLOT_FAILED;
		}
	}
	SpinLockRelease(&shared->mutex);
}

static void
wake_requesters(int *idx, int n)
{
	for (int j = 0; j < n; j++)
		SetLatch(latch_of(shared->slots[idx[j]].requester));
}

void
clipsql_inference_main(Datum arg)
{
	Oid			db = DatumGetObjectId(arg);
	TimestampTz last = GetCurrentTimestamp();
	WorkerEntry *w;

	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, 0);
	attach();

	SpinLockAcquire(&shared->mutex);
	w = entry_for(db);
	if (w == NULL)
	{
		for (int i = 0; i < NWORKERS && w == NULL; i++)
			if (shared->workers[i].state == WORKER_NONE)
				w = &shared->workers[i];
	}
	if (w == NULL || (w->state == WORKER_READY && w->pid != MyProcPid))
	{
		SpinLockRelease(&shared->mutex);
		proc_exit(0);			/* another worker serves this database */
	}
	w->db = db;
	w->state = WORKER_READY;
	w->proc = MyProcNumber;
	w->pid = MyProcPid;
	w->since = last;
	w->served = 0;
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(worker_exit, (Datum) 0);
	pgstat_report_activity(STATE_IDLE, NULL);

	for (;;)
	{
		int			idx[MAX_BATCH];
		int			n = 0;
		int			kind = -1;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		SpinLockAcquire(&shared->mutex);
		for (int i = 0; i < NSLOTS && n < MAX_BATCH; i++)
		{
			Slot	   *slot = &shared->slots[i];

			if (slot->state != SLOT_PENDING || slot->db != db)
				continue;
			if (kind < 0)
				kind = slot->kind;
			if (slot->kind != kind)
				continue;
			slot->state = SLOT_BUSY;
			idx[n++] = i;
		}
		SpinLockRelease(&shared->mutex);

		if (n > 0)
		{
			char		spec[1024];
			char		why[ERROR_LEN];

			pgstat_report_activity(STATE_RUNNING, "embedding texts");
			if (bound_spec(spec, sizeof(spec), why, sizeof(why)))
			{
				embed_batch(idx, n, kind, spec);
				wake_requesters(idx, n);
				store(spec);
			}
			else
			{
				fail_all(idx, n, why);
				wake_requesters(idx, n);
			}
			SpinLockAcquire(&shared->mutex);
			w->served += n;
			SpinLockRelease(&shared->mutex);
			pgstat_report_activity(STATE_IDLE, NULL);
			last = GetCurrentTimestamp();
			continue;
		}
		if (TimestampDifferenceExceeds(last, GetCurrentTimestamp(), worker_idle_s * 1000))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	proc_exit(0);
}
