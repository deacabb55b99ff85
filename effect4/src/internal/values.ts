/**
 * The JavaScript values of `@effect/sql-pg` 4, on `pg`: the type parsers that make a pg session
 * return what sql-pg 4's own driver returns for the same columns, and the parameter encoding of
 * `PgTypes` parameters.
 *
 * sql-pg 4 reads results in binary format and decodes int8 as `bigint`, `date` as its text,
 * `time` as microseconds (`bigint`), `interval` as `{ months, days, microseconds }`, `bytea` as
 * `Uint8Array`, and `timestamp` (without time zone) as the wall-clock time taken as UTC. pg reads
 * text and, by default, gives strings, `Date`s, `Buffer`s and its own interval object; these parsers
 * turn the text into sql-pg 4's values. What pg already decodes the same way (numbers, booleans,
 * text, json, `timestamptz`, arrays of those) keeps pg's parser.
 *
 * @internal
 */
import * as PgTypes from "@effect/sql-pg/PgTypes"
import * as Pg from "pg"
import { type ParameterTypes, withParameterTypes } from "../../../src/core/driver.js"

const OID = {
  bytea: 17,
  int8: 20,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  interval: 1186,
  int8Array: 1016,
  byteaArray: 1001,
  dateArray: 1182,
  timeArray: 1183,
  timestampArray: 1115,
  intervalArray: 1187,
  textArray: 1009
} as const

type Parser = (text: string) => unknown

const pgParser = (oid: number): Parser => Pg.types.getTypeParser(oid, "text") as Parser

/** A parser of arrays of `element`, over pg's text-array parser (which handles nesting and NULL). */
const arrayOf = (element: Parser): Parser => {
  const strings = pgParser(OID.textArray)
  const map = (value: unknown): unknown =>
    Array.isArray(value) ? value.map(map) : value === null ? null : element(value as string)
  return (text) => map(strings(text))
}

const bytes: Parser = (text) => {
  const buffer = pgParser(OID.bytea)(text) as Buffer
  return new Uint8Array(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength))
}

/** `HH:MM:SS[.ffffff]` as microseconds since midnight. */
const time: Parser = (text) => {
  const [hms, fraction = ""] = text.split(".")
  const [h, m, s] = hms!.split(":").map(Number)
  return BigInt(((h! * 60 + m!) * 60 + s!) * 1_000_000) + BigInt(fraction.padEnd(6, "0").slice(0, 6))
}

/** The wall-clock time of a `timestamp` as UTC fields; ±infinity as ±Infinity dates (Invalid Date). */
const timestamp: Parser = (text) => {
  if (text === "infinity" || text === "-infinity") return new Date(Number.NaN)
  const bc = text.endsWith(" BC")
  const iso = `${(bc ? text.slice(0, -3) : text).replace(" ", "T")}Z`
  const date = new Date(iso)
  if (bc) date.setUTCFullYear(1 - date.getUTCFullYear())
  return date
}

interface IntervalParts {
  readonly years?: number
  readonly months?: number
  readonly days?: number
  readonly hours?: number
  readonly minutes?: number
  readonly seconds?: number
  readonly milliseconds?: number
}

/** sql-pg 4's interval value: months, days, and the rest in microseconds. */
const interval: Parser = (text): PgTypes.Interval => {
  const parts = pgParser(OID.interval)(text) as IntervalParts
  const seconds = ((parts.hours ?? 0) * 60 + (parts.minutes ?? 0)) * 60 + (parts.seconds ?? 0)
  return {
    months: (parts.years ?? 0) * 12 + (parts.months ?? 0),
    days: parts.days ?? 0,
    microseconds: BigInt(seconds) * 1_000_000n + BigInt(Math.round((parts.milliseconds ?? 0) * 1000))
  }
}

const parsers: ReadonlyMap<number, Parser> = new Map<number, Parser>([
  [OID.int8, (text) => BigInt(text)],
  [OID.int8Array, arrayOf((text) => BigInt(text))],
  [OID.bytea, bytes],
  [OID.byteaArray, arrayOf(bytes)],
  [OID.date, (text) => text],
  [OID.dateArray, arrayOf((text) => text)],
  [OID.time, time],
  [OID.timeArray, arrayOf(time)],
  [OID.timestamp, timestamp],
  [OID.timestampArray, arrayOf(timestamp)],
  [OID.interval, interval],
  [OID.intervalArray, arrayOf(interval)]
])

/** The `types` every session of the Effect 4 edition uses. */
export const types: Pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    (format === undefined || format === "text" ? parsers.get(oid) : undefined) ??
    Pg.types.getTypeParser(oid, format as "text")) as Pg.CustomTypesConfig["getTypeParser"]
}

const INT32_MIN = -2147483648
const INT32_MAX = 2147483647
const JSON_OIDS: ReadonlySet<number> = new Set([PgTypes.OID.json, PgTypes.OID.jsonb])

/** The type sql-pg 4 infers for a scalar parameter (0: untyped, the server decides), and its value for pg. */
const scalar = (value: unknown): readonly [oid: number, value: unknown] => {
  if (PgTypes.isParameter(value)) {
    return [value.oid, JSON_OIDS.has(value.oid) ? JSON.stringify(value.value) : value.value]
  }
  switch (typeof value) {
    case "boolean":
      return [PgTypes.OID.bool, value]
    case "bigint":
      return [PgTypes.OID.int8, value]
    case "number":
      if (Number.isInteger(value)) {
        if (value >= INT32_MIN && value <= INT32_MAX) return [PgTypes.OID.int4, value]
        if (Number.isSafeInteger(value)) return [PgTypes.OID.int8, value]
      }
      return [PgTypes.OID.float8, value]
  }
  if (value instanceof Date) return [PgTypes.OID.timestamptz, value]
  if (value instanceof Uint8Array || value instanceof Int8Array) return [PgTypes.OID.bytea, value]
  // Strings, null, and what sql-pg 4 refuses (plain objects, which pg sends as JSON text): untyped.
  return [0, value]
}

/** An array parameter: typed by its elements when they agree (strings count as text), else untyped. */
const array = (values: ReadonlyArray<unknown>): readonly [oid: number, value: unknown] => {
  let element: number | undefined
  const out = new Array<unknown>(values.length)
  for (let i = 0; i < values.length; i++) {
    const item = values[i]
    if (Array.isArray(item)) return [0, values]
    const [oid, value] = scalar(item)
    out[i] = value
    if (value === null || value === undefined) continue
    const typed = oid === 0 && typeof value === "string" ? PgTypes.OID.text : oid
    if (typed === 0 || (element !== undefined && element !== typed)) return [0, values]
    element = typed
  }
  const arrayOid = element === undefined ? undefined : PgTypes.arrayOidFor(element, undefined)
  return arrayOid === undefined ? [0, out] : [arrayOid, out]
}

/**
 * A statement's parameters as pg sends them, with the types `@effect/sql-pg` 4 would declare for
 * them in its Parse message (so `select $1` with `10n` is an int8 for the server, as it is there).
 * `types` is undefined when every parameter is untyped.
 */
export const encodeParams = (
  params: ReadonlyArray<unknown>
): { readonly values: Array<unknown>; readonly types: ParameterTypes | undefined } => {
  const values = new Array<unknown>(params.length)
  let oids: Array<number> | undefined
  for (let i = 0; i < params.length; i++) {
    const [oid, value] = Array.isArray(params[i]) ? array(params[i] as ReadonlyArray<unknown>) : scalar(params[i])
    values[i] = value
    if (oid !== 0) (oids ??= new Array<number>(params.length).fill(0))[i] = oid
  }
  return { values, types: oids === undefined ? undefined : withParameterTypes(oids, types) }
}
