/**
 * What a statement text may do to the session it runs on, decided from the text alone.
 *
 * A pooled session goes back to the pool after each lease. If the lease may have changed state that
 * outlives its transaction, the session is reset before anyone else gets it; the reset costs a round
 * trip, so leases whose statements provably changed nothing skip it. Anything not recognised counts
 * as dirtying: a false positive costs a round trip, a false negative leaks one borrower's session
 * state to the next.
 *
 * The text is lexed once, the way PostgreSQL does (comments, nested block comments, '' strings,
 * E'' strings, dollar quotes, quoted identifiers), and split at top-level `;`. Each statement is
 * judged by its first keyword:
 * - session commands dirty: SET (but not SET LOCAL / TRANSACTION / CONSTRAINTS), RESET, DISCARD,
 *   PREPARE (not PREPARE TRANSACTION), DEALLOCATE, LISTEN, UNLISTEN, LOAD, DO, CALL, DECLARE ... WITH
 *   HOLD, and any first keyword this module does not know;
 * - temporary objects dirty: TEMP / TEMPORARY / pg_temp in CREATE (pg_temp in any DDL), and
 *   SELECT ... INTO TEMP;
 * - a function call dirties unless the function is a session-neutral built-in on the allowlist
 *   (unqualified or in pg_catalog). Calls are looked for where the statement runs a query now (DML,
 *   SELECT, DECLARE's query, the query of CREATE TABLE / MATERIALIZED VIEW ... AS, COPY's query and
 *   WHERE), not in other DDL, where expressions (defaults, index expressions, function bodies) are
 *   mostly stored for later.
 *
 * Known limits. State changed by code the text does not name is not seen: triggers, rules, views,
 * column defaults and constraints that call `set_config`, take advisory locks or call user functions
 * that do; a user function's body (its call dirties, as it is not allowlisted, but only where the text
 * names it); an allowlisted built-in shadowed through search_path; and expressions DDL does evaluate over
 * existing rows (index expressions, ALTER COLUMN ... TYPE ... USING, a new column's volatile
 * default). Sequence state (currval / lastval) is not treated as session state: column defaults
 * change it unseen anyway. Strings are lexed as with standard_conforming_strings on (the default);
 * turning it off for a session takes a SET, which dirties. Users who need all of that covered set
 * the pool's `sessionReset: "always"`.
 *
 * @internal
 */

/** May change session state that outlives its transaction. */
export const DIRTIES = 1
/** May return rows (its result type can change after DDL). */
export const RETURNS_ROWS = 2
/** DISCARD ... / DEALLOCATE ...: the session's prepared statements may be gone afterwards. */
export const DROPS_PREPARED = 4
/** BEGIN / START TRANSACTION / COMMIT / END / ROLLBACK / ABORT / SAVEPOINT / RELEASE / PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED. */
export const TRANSACTION_CONTROL = 8
/**
 * May expand a row type into columns (`SELECT *`, `t.*`, `RETURNING *`, `TABLE t`): the columns of its
 * result follow the table's, so `ALTER TABLE … ADD COLUMN` changes its result type. Any `*` outside
 * `(*)` counts (a multiplication too: a false positive only costs the prepared form).
 */
export const EXPANDS_STAR = 16

// ---------------------------------------------------------------------------------------------
// Words

/** Word info: the low byte is the word's id (0: none), the high bits say how it behaves before `(`. */
const ID_MASK = 0xff
/** A keyword whose `(` opens SQL syntax, not a call (`IN (`, `OVER (`, `VALUES (`). */
const NONCALL = 0x100
/** A function that leaves the session as it found it. */
const ALLOWED = 0x200

// Statement keywords, ids 1..LAST_STATEMENT.
const S_SELECT = 1
const S_WITH = 2
const S_VALUES = 3
const S_TABLE = 4
const S_SHOW = 5
const S_EXPLAIN = 6
const S_FETCH = 7
const S_EXECUTE = 8
const S_CALL = 9
const S_INSERT = 10
const S_UPDATE = 11
const S_DELETE = 12
const S_MERGE = 13
const S_COPY = 14
const S_MOVE = 15
const S_CLOSE = 16
const S_LOCK = 17
const S_NOTIFY = 18
const S_CHECKPOINT = 19
const S_BEGIN = 20
const S_START = 21
const S_COMMIT = 22
const S_END = 23
const S_ROLLBACK = 24
const S_ABORT = 25
const S_SAVEPOINT = 26
const S_RELEASE = 27
const S_DECLARE = 28
const S_SET = 29
const S_RESET = 30
const S_DISCARD = 31
const S_PREPARE = 32
const S_DEALLOCATE = 33
const S_LISTEN = 34
const S_UNLISTEN = 35
const S_LOAD = 36
const S_DO = 37
const S_CREATE = 38
const S_ALTER = 39
const S_DROP = 40
const S_COMMENT = 41
const S_GRANT = 42
const S_REVOKE = 43
const S_TRUNCATE = 44
const S_VACUUM = 45
const S_ANALYZE = 46
const S_REINDEX = 47
const S_CLUSTER = 48
const S_REFRESH = 49
const S_SECURITY = 50
const S_IMPORT = 51
const S_REASSIGN = 52
const LAST_STATEMENT = 52

// Other words the rules look at.
const W_LOCAL = 60
const W_TRANSACTION = 61
const W_CONSTRAINTS = 62
const W_HOLD = 63
const W_WITHOUT = 64
const W_FOR = 65
const W_INTO = 66
const W_TEMP = 67
const W_GLOBAL = 68
const W_AS = 69
const W_RETURNING = 70
const W_TO = 71
const W_WHERE = 72
const W_VERBOSE = 73
const W_OR = 74
const W_REPLACE = 75
const W_UNLOGGED = 76
const W_FUNCTION = 77
const W_PROCEDURE = 78
const W_MATERIALIZED = 79
const W_CASE = 80
const W_RECURSIVE = 81
const W_ON = 82
const W_OPERATOR = 83
const W_ORDINALITY = 84
const W_NOT = 85
const W_PG_CATALOG = 86

/** Statement class bit (beside the result flags): persistent DDL, whose expressions are not run now. */
const DDL = 16

/** Per statement keyword: the flags it always has, and DDL. */
const STATEMENT: Array<number> = new Array(LAST_STATEMENT + 1).fill(0)

// Open addressing over FNV-1a hashes of the lowercased word: a lookup hashes nothing twice (the
// scanner hashes while it reads the word) and allocates nothing.
const TABLE_SIZE = 2048
const FNV_OFFSET = 0x811c9dc5 | 0
const FNV_PRIME = 0x01000193
const slots = new Int32Array(TABLE_SIZE)
const entryWord: Array<string> = []
const entryHash: Array<number> = []
const entryInfo: Array<number> = []

const slotOf = (hash: number): number => (hash ^ (hash >>> 15)) & (TABLE_SIZE - 1)

const define = (word: string, info: number): void => {
  let hash = FNV_OFFSET
  for (let i = 0; i < word.length; i++) hash = Math.imul(hash ^ word.charCodeAt(i), FNV_PRIME)
  let slot = slotOf(hash)
  while (slots[slot] !== 0) {
    const entry = slots[slot]! - 1
    if (entryWord[entry] === word) {
      const known = entryInfo[entry]!
      if ((known & ID_MASK) !== 0 && (info & ID_MASK) !== 0) throw new Error(`classify: "${word}" defined twice`)
      entryInfo[entry] = known | info
      return
    }
    slot = (slot + 1) & (TABLE_SIZE - 1)
  }
  entryWord.push(word)
  entryHash.push(hash)
  entryInfo.push(info)
  slots[slot] = entryWord.length
}

const defineAll = (words: string, info: number): void => {
  for (const word of words.split(/\s+/)) if (word !== "") define(word, info)
}

const statement = (word: string, id: number, flags: number): void => {
  define(word, id)
  STATEMENT[id] = flags
}

statement("select", S_SELECT, RETURNS_ROWS)
statement("with", S_WITH, RETURNS_ROWS)
statement("values", S_VALUES, RETURNS_ROWS)
statement("table", S_TABLE, RETURNS_ROWS)
statement("show", S_SHOW, RETURNS_ROWS)
statement("explain", S_EXPLAIN, RETURNS_ROWS)
statement("fetch", S_FETCH, RETURNS_ROWS)
statement("execute", S_EXECUTE, RETURNS_ROWS)
statement("call", S_CALL, DIRTIES | RETURNS_ROWS)
statement("insert", S_INSERT, 0)
statement("update", S_UPDATE, 0)
statement("delete", S_DELETE, 0)
statement("merge", S_MERGE, 0)
statement("copy", S_COPY, 0)
statement("move", S_MOVE, 0)
statement("close", S_CLOSE, 0)
statement("lock", S_LOCK, 0)
statement("notify", S_NOTIFY, 0)
statement("checkpoint", S_CHECKPOINT, 0)
statement("begin", S_BEGIN, TRANSACTION_CONTROL)
statement("start", S_START, TRANSACTION_CONTROL)
statement("commit", S_COMMIT, TRANSACTION_CONTROL)
statement("end", S_END, TRANSACTION_CONTROL)
statement("rollback", S_ROLLBACK, TRANSACTION_CONTROL)
statement("abort", S_ABORT, TRANSACTION_CONTROL)
statement("savepoint", S_SAVEPOINT, TRANSACTION_CONTROL)
statement("release", S_RELEASE, TRANSACTION_CONTROL)
statement("declare", S_DECLARE, 0)
statement("set", S_SET, DIRTIES)
statement("reset", S_RESET, DIRTIES)
statement("discard", S_DISCARD, DIRTIES | DROPS_PREPARED)
statement("prepare", S_PREPARE, DIRTIES)
statement("deallocate", S_DEALLOCATE, DIRTIES | DROPS_PREPARED)
statement("listen", S_LISTEN, DIRTIES)
statement("unlisten", S_UNLISTEN, DIRTIES)
statement("load", S_LOAD, DIRTIES)
statement("do", S_DO, DIRTIES)
statement("create", S_CREATE, DDL)
statement("alter", S_ALTER, DDL)
statement("drop", S_DROP, DDL)
statement("comment", S_COMMENT, DDL)
statement("grant", S_GRANT, DDL)
statement("revoke", S_REVOKE, DDL)
statement("truncate", S_TRUNCATE, DDL)
statement("vacuum", S_VACUUM, DDL)
statement("analyze", S_ANALYZE, DDL)
define("analyse", S_ANALYZE)
statement("reindex", S_REINDEX, DDL)
statement("cluster", S_CLUSTER, DDL)
statement("refresh", S_REFRESH, DDL)
statement("security", S_SECURITY, DDL)
statement("import", S_IMPORT, DDL)
statement("reassign", S_REASSIGN, DDL)

define("local", W_LOCAL)
define("transaction", W_TRANSACTION)
define("constraints", W_CONSTRAINTS)
define("hold", W_HOLD)
define("without", W_WITHOUT)
define("for", W_FOR)
define("into", W_INTO)
define("temp", W_TEMP)
define("temporary", W_TEMP)
define("global", W_GLOBAL)
define("as", W_AS)
define("returning", W_RETURNING)
define("to", W_TO)
define("where", W_WHERE)
define("verbose", W_VERBOSE)
define("or", W_OR)
define("replace", W_REPLACE)
define("unlogged", W_UNLOGGED)
define("function", W_FUNCTION)
define("procedure", W_PROCEDURE)
define("materialized", W_MATERIALIZED)
define("case", W_CASE)
define("recursive", W_RECURSIVE)
define("on", W_ON)
define("operator", W_OPERATOR)
define("ordinality", W_ORDINALITY)
define("not", W_NOT)
define("pg_catalog", W_PG_CATALOG)

// Words whose `(` is syntax. Reserved words mostly (they cannot name a function unquoted), plus the
// few unreserved ones the syntax needs; an unreserved word here could hide a user function of that name.
defineAll(
  `all and any array as between both by case conflict cube distinct else except exists filter for from group
   having ilike in insert intersect into is join lateral leading like limit materialized not offset on only
   operator or order over overlaps placing repeatable returning rollup row select set sets similar some
   symmetric asymmetric table then to trailing union using values variadic when where window with columns`,
  NONCALL
)

// Session-neutral built-ins. Not here, on purpose: set_config, setseed, session-level advisory locks
// (pg_advisory_lock, pg_try_advisory_lock and their _shared forms), dblink_*, lo_*, pg_trgm's set_limit.
defineAll(
  // aggregates and window functions
  `count sum avg min max array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg json_objectagg
   json_arrayagg bool_and bool_or every bit_and bit_or bit_xor stddev stddev_pop stddev_samp variance var_pop
   var_samp corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx
   regr_sxy regr_syy percentile_cont percentile_disc mode any_value range_agg range_intersect_agg xmlagg grouping
   row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value` +
    // conditional, SQL constructs spelled like calls
    ` coalesce nullif greatest least num_nulls num_nonnulls cast treat exists row` +
    // strings
    ` lower upper length char_length character_length octet_length bit_length substring substr trim btrim ltrim
   rtrim replace concat concat_ws format left right position strpos split_part repeat reverse lpad rpad initcap
   translate regexp_replace regexp_match regexp_matches regexp_split_to_array regexp_split_to_table regexp_count
   regexp_instr regexp_like regexp_substr starts_with md5 sha224 sha256 sha384 sha512 encode decode quote_ident
   quote_literal quote_nullable to_hex to_oct to_bin ascii chr string_to_array string_to_table array_to_string
   overlay normalize unistr casefold parse_ident convert convert_from convert_to unaccent` +
    // date and time
    ` now clock_timestamp statement_timestamp transaction_timestamp timeofday date_trunc date_part extract age
   make_date make_time make_timestamp make_timestamptz make_interval to_char to_date to_timestamp to_number
   justify_days justify_hours justify_interval date_bin date_add date_subtract isfinite current_time
   current_timestamp localtime localtimestamp` +
    // math
    ` abs round ceil ceiling floor trunc mod power pow sqrt cbrt exp ln log log10 sign random random_normal pi div
   width_bucket gcd lcm degrees radians sin cos tan cot asin acos atan atan2 sinh cosh tanh factorial scale
   min_scale trim_scale` +
    // uuid
    ` gen_random_uuid uuid_generate_v1 uuid_generate_v4 uuidv4 uuidv7` +
    // json
    ` to_json to_jsonb row_to_json array_to_json json_build_object jsonb_build_object json_build_array
   jsonb_build_array json_object jsonb_object json_array_length jsonb_array_length json_each jsonb_each
   json_each_text jsonb_each_text json_array_elements jsonb_array_elements json_array_elements_text
   jsonb_array_elements_text json_object_keys jsonb_object_keys json_typeof jsonb_typeof jsonb_set jsonb_set_lax
   jsonb_insert json_strip_nulls jsonb_strip_nulls jsonb_pretty json_extract_path jsonb_extract_path
   json_extract_path_text jsonb_extract_path_text jsonb_path_query jsonb_path_query_array jsonb_path_query_first
   jsonb_path_exists jsonb_path_match json_populate_record jsonb_populate_record json_to_record jsonb_to_record
   json_to_recordset jsonb_to_recordset json_populate_recordset jsonb_populate_recordset json json_array
   json_scalar json_serialize json_exists json_query json_value json_table` +
    // arrays and set-returning functions
    ` unnest array_length array_position array_positions array_remove array_replace array_append array_prepend
   array_cat array_dims array_lower array_upper array_ndims cardinality array_fill trim_array array_sample
   array_shuffle array_reverse array_sort generate_series generate_subscripts` +
    // types written with modifiers or called as casts
    ` varchar char character varying numeric decimal dec timestamp timestamptz time timetz interval second bit
   varbit float double nchar bpchar text date` +
    // ranges, network, geometry
    ` int4range int8range numrange tsrange tstzrange daterange lower_inc upper_inc lower_inf upper_inf isempty
   range_merge host masklen family netmask network broadcast abbrev point box circle line lseg path polygon area
   center diameter height width radius npoints isclosed isopen bound_box` +
    // text search, xml
    ` setweight to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
   ts_headline tsvector_to_array array_to_tsvector numnode querytree strip ts_delete ts_filter xmlelement
   xmlattributes xmlforest xmlconcat xmlparse xmlpi xmlroot xmlserialize xmlexists xmltable xpath xpath_exists
   xml_is_well_formed` +
    // extensions commonly installed: pg_trgm, pgcrypto; TABLESAMPLE methods
    ` similarity word_similarity strict_word_similarity show_trgm digest hmac crypt gen_salt gen_random_bytes
   pgp_sym_encrypt pgp_sym_decrypt armor dearmor bernoulli system` +
    // server and catalog information, transaction-scoped locks, other sessions
    ` pg_sleep pg_sleep_for pg_sleep_until pg_backend_pid pg_notify current_setting version txid_current
   txid_current_if_assigned pg_current_xact_id pg_current_xact_id_if_assigned pg_xact_status nextval currval
   setval lastval pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_xact_lock
   pg_try_advisory_xact_lock_shared pg_advisory_unlock pg_advisory_unlock_shared pg_advisory_unlock_all
   pg_cancel_backend pg_terminate_backend pg_blocking_pids pg_typeof pg_column_size pg_column_compression
   pg_relation_size pg_total_relation_size pg_size_pretty pg_database_size pg_table_size pg_indexes_size
   pg_tablespace_size pg_relation_filenode pg_listening_channels pg_my_temp_schema pg_is_other_temp_schema
   pg_postmaster_start_time pg_is_in_recovery pg_trigger_depth current_database current_schema current_schemas
   current_query inet_server_addr inet_server_port inet_client_addr inet_client_port has_table_privilege
   has_schema_privilege has_database_privilege has_column_privilege has_function_privilege
   has_sequence_privilege has_any_column_privilege has_type_privilege has_tablespace_privilege pg_has_role
   to_regclass to_regtype to_regproc to_regprocedure to_regnamespace to_regrole obj_description col_description
   shobj_description format_type pg_get_indexdef pg_get_constraintdef pg_get_viewdef pg_get_expr
   pg_get_serial_sequence pg_get_userbyid pg_get_functiondef pg_get_function_arguments pg_get_function_result
   pg_get_triggerdef pg_get_ruledef pg_get_partkeydef pg_table_is_visible pg_function_is_visible
   pg_type_is_visible pg_input_is_valid pg_client_encoding pg_encoding_to_char merge_action`,
  ALLOWED
)

const fold = (c: number): number => (c >= 65 && c <= 90 ? c | 32 : c)

/** The info of text[start, end) (lowercased first when `folded`), 0 when the word is not known. */
const lookup = (text: string, start: number, end: number, hash: number, folded: boolean): number => {
  const length = end - start
  let slot = slotOf(hash)
  while (slots[slot] !== 0) {
    const entry = slots[slot]! - 1
    const word = entryWord[entry]!
    if (entryHash[entry] === hash && word.length === length) {
      let i = 0
      while (i < length) {
        const c = text.charCodeAt(start + i)
        if ((folded ? fold(c) : c) !== word.charCodeAt(i)) break
        i++
      }
      if (i === length) return entryInfo[entry]!
    }
    slot = (slot + 1) & (TABLE_SIZE - 1)
  }
  return 0
}

/** Whether text[start, end) names the session's temporary schema (pg_temp, pg_temp_N). */
const isPgTemp = (text: string, start: number, end: number, folded: boolean): boolean => {
  if (end - start < 7) return false
  for (let i = 0; i < 7; i++) {
    const c = text.charCodeAt(start + i)
    if ((folded ? fold(c) : c) !== "pg_temp".charCodeAt(i)) return false
  }
  return true
}

// ---------------------------------------------------------------------------------------------
// Lexing

const T_WORD = 1
const T_QUOTED = 2
const T_STRING = 3
const T_NUMBER = 4
const T_LPAREN = 5
const T_RPAREN = 6
const T_DOT = 7
const T_COMMA = 8
const T_CAST = 9
const T_OTHER = 10
/** The statement's first keyword: never the name of a call. */
const T_FIRST = 11

// PostgreSQL treats every byte with the high bit set as a letter.
const isIdentStart = (c: number): boolean => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128
const isDigit = (c: number): boolean => c >= 48 && c <= 57
const isIdentChar = (c: number): boolean => isIdentStart(c) || isDigit(c) || c === 36
const isTagChar = (c: number): boolean => isIdentStart(c) || isDigit(c)

/** The end of a '...' string or "..." identifier whose content starts at i; a doubled quote escapes. */
const skipQuoted = (text: string, i: number, quote: string): number => {
  for (;;) {
    const j = text.indexOf(quote, i)
    if (j === -1) return text.length
    if (text.charCodeAt(j + 1) !== quote.charCodeAt(0)) return j + 1
    i = j + 2
  }
}

/** The end of an E'...' string whose content starts at i. */
const skipEscapeString = (text: string, i: number): number => {
  const n = text.length
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === 92) i += 2
    else if (c === 39) {
      if (text.charCodeAt(i + 1) !== 39) return i + 1
      i += 2
    } else i++
  }
  return n
}

/** The end of a block comment whose content starts at i; they nest. */
const skipBlockComment = (text: string, i: number): number => {
  const n = text.length
  let level = 1
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === 42 && text.charCodeAt(i + 1) === 47) {
      i += 2
      if (--level === 0) return i
    } else if (c === 47 && text.charCodeAt(i + 1) === 42) {
      i += 2
      level++
    } else i++
  }
  return n
}

// ---------------------------------------------------------------------------------------------
// Classification

const scan = (text: string): number => {
  const n = text.length
  let result = 0

  // Per statement; `finish` resets them.
  /** The first keyword's id; 0 before it, -1 when it is not a statement keyword. */
  let kw = 0
  let flags = 0
  let tokens = 0
  /** Tokens after the first keyword. */
  let pos = 0
  let depth = 0
  /** Bit d: the group closing at depth d may be followed by an alias with a column list, `f(x) t(a)`. */
  let aliasMask = 0
  /** Whether calls are looked for. */
  let callRule = true
  /** Inside EXPLAIN's options, before the explained statement's keyword. */
  let explain = false
  /** The next identifier (and the rest of its qualified name) is a name, never a call. */
  let nameNext = false
  let prevKind = 0
  /** The id of the previous token when it was an unqualified bare word. */
  let prevWord = 0
  let dotAfterIdent = false
  // The identifier chain `a.b.c` that ends at the previous token.
  let chainExempt = false
  let chainQualOk = true
  let chainAfterComma = false
  let identKind = 0
  let identInfo = 0
  let identQualified = false
  let identPgCatalog = false
  /** After INTO in a SELECT: TEMP / pg_temp there creates a temporary table. */
  let into = false
  /**
   * An unknown call after a comma may be a CTE name with columns, `, b(x) AS (SELECT`: 1 inside its
   * parentheses, 2 after them (AS must follow), 3 after AS (`(` or [NOT] MATERIALIZED must follow),
   * 4 after that `(` (a query must follow).
   */
  let defer = 0
  let deferDepth = 0
  /** CREATE: the id of the created object's keyword, -1 when not one the rules care about. */
  let createObj = 0
  /** BEGIN ATOMIC ... END nesting in CREATE FUNCTION / PROCEDURE, inside which `;` does not split. */
  let bodyDepth = 0
  /** DECLARE before its FOR: where WITH HOLD can appear. */
  let declareHead = false
  /** COPY (query): the depth its parentheses close at. */
  let copyDepth = -1

  const finish = (): void => {
    if (tokens > 0) {
      // Only parentheses: not a statement we know.
      if (kw === 0 && !explain) flags |= DIRTIES | RETURNS_ROWS
      if (defer !== 0) flags |= DIRTIES
      result |= flags
    }
    kw = 0
    flags = 0
    tokens = 0
    pos = 0
    depth = 0
    aliasMask = 0
    callRule = true
    explain = false
    nameNext = false
    prevKind = 0
    prevWord = 0
    dotAfterIdent = false
    chainExempt = false
    chainQualOk = true
    chainAfterComma = false
    identKind = 0
    identInfo = 0
    identQualified = false
    identPgCatalog = false
    into = false
    defer = 0
    deferDepth = 0
    createObj = 0
    bodyDepth = 0
    declareHead = false
    copyDepth = -1
  }

  const begin = (id: number): void => {
    if (id < 1 || id > LAST_STATEMENT) {
      kw = -1
      flags |= DIRTIES | RETURNS_ROWS
      return
    }
    if (id === S_EXPLAIN) {
      explain = true
      flags |= RETURNS_ROWS
      return
    }
    kw = id
    const info = STATEMENT[id]!
    flags |= info & 15
    if (id === S_TABLE) flags |= EXPANDS_STAR
    callRule = (info & DDL) === 0 && id !== S_COPY
    declareHead = id === S_DECLARE
    // The table after COPY and the prepared statement after EXECUTE take parentheses; so does a CTE name.
    if (id === S_COPY || id === S_EXECUTE || id === S_WITH) nameNext = true
  }

  /** `(` right after an identifier: a call, unless the identifier is a name or syntax. */
  const call = (): void => {
    if (chainExempt) return
    if (identKind === T_WORD && !identQualified && (identInfo & NONCALL) !== 0) return
    if (chainQualOk && (identInfo & ALLOWED) !== 0) return
    if (chainAfterComma && !identQualified && defer === 0) {
      defer = 1
      deferDepth = depth
      return
    }
    flags |= DIRTIES
  }

  const token = (kind: number, info: number, start: number, end: number): void => {
    tokens++
    const exempt = nameNext
    nameNext = false
    const qualified = prevKind === T_DOT && dotAfterIdent
    const word = kind === T_WORD && !qualified ? info & ID_MASK : 0

    if (kw === 0) {
      if (explain) {
        // EXPLAIN [ANALYZE] [VERBOSE] or EXPLAIN (options): the explained statement follows.
        if (kind === T_LPAREN) depth++
        else if (kind === T_RPAREN) {
          if (depth > 0) depth--
        } else if (depth === 0 && word !== S_ANALYZE && word !== W_VERBOSE) {
          begin(kind === T_WORD ? word : -1)
          prevKind = T_FIRST
          prevWord = 0
          return
        }
        prevKind = kind
        return
      }
      // `(SELECT ...) UNION (SELECT ...)`
      if (kind === T_LPAREN) {
        depth++
        prevKind = kind
        return
      }
      begin(kind === T_WORD ? word : -1)
      prevKind = T_FIRST
      prevWord = 0
      return
    }

    pos++
    if (pos === 1) {
      if (kw === S_SET) {
        if (word === W_LOCAL || word === W_TRANSACTION || word === W_CONSTRAINTS) flags &= ~DIRTIES
      } else if (kw === S_PREPARE) {
        if (word === W_TRANSACTION) flags = (flags & ~DIRTIES) | TRANSACTION_CONTROL
      } else if (kw === S_COPY && kind === T_LPAREN) {
        callRule = true
        copyDepth = depth
      }
    } else if (pos === 2 && kw === S_PREPARE && (flags & TRANSACTION_CONTROL) !== 0 && kind !== T_STRING) {
      // PREPARE transaction AS ...: a statement named "transaction".
      flags = (flags & ~TRANSACTION_CONTROL) | DIRTIES
    }

    if (defer === 2) {
      if (word === W_AS) defer = 3
      else {
        flags |= DIRTIES
        defer = 0
      }
    } else if (defer === 3) {
      if (kind === T_LPAREN) defer = 4
      else {
        if (word !== W_MATERIALIZED && word !== W_NOT) flags |= DIRTIES
        defer = 0
      }
    } else if (defer === 4) {
      // A query, not the column definition list of a call returning record, `, f(x) AS (a int)`.
      if (kind !== T_LPAREN && word !== S_SELECT && word !== S_VALUES && word !== S_WITH && word !== S_TABLE)
        flags |= DIRTIES
      defer = 0
    }

    if (into) {
      if (word !== W_LOCAL && word !== W_GLOBAL) {
        into = false
        if (word === W_TEMP || ((kind === T_WORD || kind === T_QUOTED) && isPgTemp(text, start, end, kind === T_WORD)))
          flags |= DIRTIES
      }
    }

    if (kw === S_CREATE && createObj === 0) {
      if (
        word !== W_OR &&
        word !== W_REPLACE &&
        word !== W_TEMP &&
        word !== W_LOCAL &&
        word !== W_GLOBAL &&
        word !== W_UNLOGGED
      )
        createObj = word === 0 ? -1 : word
    }

    switch (kind) {
      case T_WORD:
      case T_QUOTED: {
        if (qualified) chainQualOk = identPgCatalog
        else {
          chainExempt = exempt
          chainQualOk = true
          chainAfterComma = prevKind === T_COMMA
        }
        identKind = kind
        identInfo = info
        identQualified = qualified
        identPgCatalog = !qualified && (info & ID_MASK) === W_PG_CATALOG
        if (kw > 0 && (STATEMENT[kw]! & DDL) !== 0 && isPgTemp(text, start, end, kind === T_WORD)) flags |= DIRTIES
        switch (word) {
          case W_RETURNING:
            if (kw === S_INSERT || kw === S_UPDATE || kw === S_DELETE || kw === S_MERGE) flags |= RETURNS_ROWS
            break
          case W_INTO:
            nameNext = true
            into = kw === S_SELECT || kw === S_WITH
            break
          case W_AS:
            nameNext = true
            if (depth === 0 && (createObj === S_TABLE || createObj === W_MATERIALIZED)) callRule = true
            break
          case S_EXECUTE:
          case S_WITH:
          case W_RECURSIVE:
          case W_ORDINALITY:
            nameNext = true
            break
          case W_TEMP:
            if (kw === S_CREATE) flags |= DIRTIES
            break
          case W_HOLD:
            if (declareHead && prevWord !== W_WITHOUT) flags |= DIRTIES
            break
          case W_FOR:
            if (depth === 0) declareHead = false
            break
          case W_WHERE:
            // COPY ... FROM ... WHERE runs its condition per row.
            if (kw === S_COPY && depth === 0) callRule = true
            break
          case W_TO:
            if (kw === S_COPY && depth === 0) flags |= RETURNS_ROWS
            break
          case S_BEGIN:
            if (depth === 0 && (createObj === W_FUNCTION || createObj === W_PROCEDURE)) bodyDepth++
            break
          case W_CASE:
            if (depth === 0 && bodyDepth > 0) bodyDepth++
            break
          case S_END:
            if (depth === 0 && bodyDepth > 0) bodyDepth--
            break
        }
        break
      }
      case T_LPAREN:
        if (callRule && (prevKind === T_WORD || prevKind === T_QUOTED)) call()
        depth++
        if (depth < 31) {
          // DISTINCT ON (a) f(x), OPERATOR(s.+) f(x): what follows is an expression, not an alias.
          if (prevWord === W_ON || prevWord === W_OPERATOR) aliasMask &= ~(1 << depth)
          else aliasMask |= 1 << depth
        }
        break
      case T_RPAREN:
        if (depth > 0) {
          nameNext = depth < 31 && ((aliasMask >>> depth) & 1) === 1
          depth--
          if (depth === copyDepth) {
            callRule = false
            copyDepth = -1
          }
          if (defer === 1 && depth === deferDepth) defer = 2
        }
        break
      case T_DOT:
        dotAfterIdent = prevKind === T_WORD || prevKind === T_QUOTED
        break
      case T_CAST:
        nameNext = true
        break
    }
    prevKind = kind
    prevWord = word
  }

  let i = 0
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === 32 || (c >= 9 && c <= 13)) {
      i++
      continue
    }
    const start = i
    if (isIdentStart(c)) {
      let hash = FNV_OFFSET
      do {
        hash = Math.imul(hash ^ fold(text.charCodeAt(i)), FNV_PRIME)
        i++
      } while (i < n && isIdentChar(text.charCodeAt(i)))
      const next = text.charCodeAt(i)
      if (i - start === 1 && next === 39) {
        // E'...' has backslash escapes; B'...', X'...', N'...' are plain strings.
        if (c === 69 || c === 101) {
          i = skipEscapeString(text, i + 1)
          token(T_STRING, 0, start, i)
          continue
        }
        if (c === 66 || c === 98 || c === 88 || c === 120 || c === 78 || c === 110) {
          i = skipQuoted(text, i + 1, "'")
          token(T_STRING, 0, start, i)
          continue
        }
      } else if (i - start === 1 && (c === 85 || c === 117) && next === 38) {
        const quote = text.charCodeAt(i + 1)
        if (quote === 39) {
          i = skipQuoted(text, i + 2, "'")
          token(T_STRING, 0, start, i)
          continue
        }
        if (quote === 34) {
          i = skipQuoted(text, i + 2, '"')
          token(T_QUOTED, 0, start + 3, i - 1)
          continue
        }
      }
      token(T_WORD, lookup(text, start, i, hash, true), start, i)
      continue
    }
    switch (c) {
      case 45: // -
        if (text.charCodeAt(i + 1) === 45) {
          const newline = text.indexOf("\n", i + 2)
          i = newline === -1 ? n : newline + 1
          continue
        }
        break
      case 47: // /
        if (text.charCodeAt(i + 1) === 42) {
          i = skipBlockComment(text, i + 2)
          continue
        }
        break
      case 39: // '
        i = skipQuoted(text, i + 1, "'")
        token(T_STRING, 0, start, i)
        continue
      case 34: {
        // "identifier": exact spelling, never a keyword.
        i = skipQuoted(text, i + 1, '"')
        const end = text.charCodeAt(i - 1) === 34 && i - 1 > start ? i - 1 : i
        let hash = FNV_OFFSET
        let plain = true
        for (let j = start + 1; j < end; j++) {
          const d = text.charCodeAt(j)
          if (d === 34) plain = false
          hash = Math.imul(hash ^ d, FNV_PRIME)
        }
        token(T_QUOTED, plain ? lookup(text, start + 1, end, hash, false) : 0, start + 1, end)
        continue
      }
      case 36: {
        // $1 is a parameter; $tag$ ... $tag$ a string.
        const d = text.charCodeAt(i + 1)
        if (isDigit(d)) {
          i += 2
          while (i < n && isDigit(text.charCodeAt(i))) i++
          token(T_NUMBER, 0, start, i)
          continue
        }
        let j = i + 1
        while (j < n && isTagChar(text.charCodeAt(j))) j++
        if (text.charCodeAt(j) === 36) {
          const tag = text.slice(i, j + 1)
          const close = text.indexOf(tag, j + 1)
          i = close === -1 ? n : close + tag.length
          token(T_STRING, 0, start, i)
          continue
        }
        break
      }
      case 42: // *
        i++
        if (prevKind !== T_LPAREN) flags |= EXPANDS_STAR
        token(T_OTHER, 0, start, i)
        continue
      case 40:
        i++
        token(T_LPAREN, 0, start, i)
        continue
      case 41:
        i++
        token(T_RPAREN, 0, start, i)
        continue
      case 44:
        i++
        token(T_COMMA, 0, start, i)
        continue
      case 59: // ;
        i++
        if (depth === 0 && bodyDepth === 0) finish()
        else token(T_OTHER, 0, start, i)
        continue
      case 58: // :
        if (text.charCodeAt(i + 1) === 58) {
          i += 2
          token(T_CAST, 0, start, i)
          continue
        }
        break
      case 46: // .
        if (!isDigit(text.charCodeAt(i + 1))) {
          i++
          token(T_DOT, 0, start, i)
          continue
        }
        break
    }
    if (isDigit(c) || c === 46) {
      i++
      while (i < n) {
        const d = text.charCodeAt(i)
        if (isDigit(d) || d === 46 || d === 95) i++
        else if (
          (d === 101 || d === 69) &&
          (isDigit(text.charCodeAt(i + 1)) ||
            ((text.charCodeAt(i + 1) === 43 || text.charCodeAt(i + 1) === 45) && isDigit(text.charCodeAt(i + 2))))
        )
          i += 2
        else break
      }
      token(T_NUMBER, 0, start, i)
      continue
    }
    i++
    token(T_OTHER, 0, start, i)
  }
  finish()
  return result
}

// Texts repeat (ORMs and prepared statements send the same few), so results are cached. Long texts
// usually carry inlined values and do not repeat; they are not kept, so the cache stays small.
const CACHE_ENTRIES = 4096
const CACHE_TEXT_LENGTH = 16_384
const cache = new Map<string, number>()

/** The OR of the flags above for one statement text (possibly several statements separated by `;`). */
export const classify = (text: string): number => {
  const cached = cache.get(text)
  if (cached !== undefined) return cached
  const flags = scan(text)
  if (text.length <= CACHE_TEXT_LENGTH) {
    if (cache.size >= CACHE_ENTRIES) cache.clear()
    cache.set(text, flags)
  }
  return flags
}
