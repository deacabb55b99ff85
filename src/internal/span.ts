/**
 * The `sql.transaction` span when nobody records spans (Effect's built-in tracer): what `Effect.currentSpan` sees
 * inside a transaction, as `@effect/sql` provides it, at a fraction of the cost. Effect's own NativeSpan draws 48
 * random hex digits and fills a `Map` for every span; measured in the benchmark, that span and ending it through
 * `Effect.onExit` cost pg-warden about 10 % of its CPU per transaction. This one has the same fields, makes its ids
 * and its attribute map only when they are read or written, and is ended by the caller where the transaction ends.
 *
 * @internal
 */
import type * as Context from "effect/Context"
import type * as Exit from "effect/Exit"
import type * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"

const HEX = "0123456789abcdef"

const randomHex = (length: number): string => {
  let out = ""
  for (let i = 0; i < length; i++) out += HEX[(Math.random() * 16) | 0]
  return out
}

export class QuietSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly sampled = true
  status: Tracer.SpanStatus
  readonly links: Array<Tracer.SpanLink> = []
  /** Events, as NativeSpan keeps them: name, time, attributes. */
  events: Array<readonly [string, bigint, Record<string, unknown>]> | undefined = undefined
  private map: Map<string, unknown> | undefined = undefined
  private ownTraceId: string | undefined = undefined
  private ownSpanId: string | undefined = undefined

  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Context.Context<never>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind,
    private readonly initialAttributes: ReadonlyArray<readonly [string, unknown]>
  ) {
    this.status = { _tag: "Started", startTime }
  }

  get traceId(): string {
    if (this.parent._tag === "Some") return this.parent.value.traceId
    this.ownTraceId ??= randomHex(32)
    return this.ownTraceId
  }

  get spanId(): string {
    this.ownSpanId ??= randomHex(16)
    return this.ownSpanId
  }

  get attributes(): ReadonlyMap<string, unknown> {
    this.map ??= new Map(this.initialAttributes)
    return this.map
  }

  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    if (this.status._tag === "Ended") return
    this.status = { _tag: "Ended", endTime, exit, startTime: this.status.startTime }
  }

  attribute(key: string, value: unknown): void {
    this.map ??= new Map(this.initialAttributes)
    this.map.set(key, value)
  }

  event(name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
    this.events ??= []
    this.events.push([name, startTime, attributes ?? {}])
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}
