/**
 * Statements sent with messages of ours in front of them, in one Sync group.
 *
 * BEGIN without a round trip of its own: the first statement of a transaction is sent as
 * one extended-protocol group, `Parse/Bind/Execute BEGIN` followed by the statement's own
 * messages and a single Sync.
 *
 * Because there is one Sync, the server treats the group as a unit: if BEGIN fails (or is
 * cancelled), the statement is skipped, so it can never run outside the transaction. The
 * wrapper is a pg Submittable that swallows BEGIN's replies and hands everything after them
 * to the statement's own pg Query.
 *
 * @internal
 */
import type { Wire } from "./driver.js"

/** The parts of pg's Query the wrapper delegates to. */
export interface InnerQuery {
  readonly name?: string | undefined
  readonly text: string
  submit(connection: Wire): Error | null
  handleRowDescription(msg: unknown): void
  handleDataRow(msg: unknown): void
  handlePortalSuspended(connection: unknown): void
  handleCommandComplete(msg: unknown, connection: unknown): void
  handleEmptyQuery(connection: unknown): void
  handleError(error: unknown, connection: unknown): void
  handleReadyForQuery(connection: unknown): void
  handleCopyInResponse(connection: unknown): void
  handleCopyData(msg: unknown, connection: unknown): void
}

/** A statement can ride behind BEGIN when it is one statement (the extended protocol takes only one). */
export const canCarryBegin = (text: string): boolean => !text.includes(";")

/** Hands every reply to the wrapped statement; subclasses add messages in front of it. */
abstract class Prefixed {
  constructor(readonly inner: InnerQuery) {}

  get name(): string | undefined {
    return this.inner.name
  }

  get text(): string {
    return this.inner.text
  }

  abstract submit(connection: Wire): Error | null

  handleCommandComplete(msg: unknown, connection: unknown): void {
    this.inner.handleCommandComplete(msg, connection)
  }
  handleError(error: unknown, connection: Wire): void {
    this.inner.handleError(error, connection)
  }
  handleRowDescription(msg: unknown): void {
    this.inner.handleRowDescription(msg)
  }
  handleDataRow(msg: unknown): void {
    this.inner.handleDataRow(msg)
  }
  handlePortalSuspended(connection: unknown): void {
    this.inner.handlePortalSuspended(connection)
  }
  handleEmptyQuery(connection: unknown): void {
    this.inner.handleEmptyQuery(connection)
  }
  handleReadyForQuery(connection: unknown): void {
    this.inner.handleReadyForQuery(connection)
  }
  handleCopyInResponse(connection: unknown): void {
    this.inner.handleCopyInResponse(connection)
  }
  handleCopyData(msg: unknown, connection: unknown): void {
    this.inner.handleCopyData(msg, connection)
  }
}

export class WithBegin extends Prefixed {
  /** 0: BEGIN's replies are still coming; 1: everything belongs to the statement. */
  private phase: 0 | 1 = 0

  // pg reads `name` and `text` of the active query when a ParseComplete or an error arrives;
  // during BEGIN's part they must not point at the statement's prepared name.
  override get name(): string | undefined {
    return this.phase === 1 ? this.inner.name : undefined
  }

  submit(connection: Wire): Error | null {
    connection.stream.cork?.()
    try {
      connection.parse({ text: "BEGIN" })
      connection.bind({})
      connection.execute({})
      return this.inner.submit(connection)
    } finally {
      connection.stream.uncork?.()
    }
  }

  override handleCommandComplete(msg: unknown, connection: unknown): void {
    if (this.phase === 0) {
      this.phase = 1
      return
    }
    this.inner.handleCommandComplete(msg, connection)
  }

  override handleError(error: unknown, connection: Wire): void {
    // BEGIN failed: the server skips the statement up to the Sync, including its Parse.
    if (this.phase === 0 && this.inner.name !== undefined) delete connection.submittedNamedStatements[this.inner.name]
    this.inner.handleError(error, connection)
  }
}

/**
 * A named statement prepared again under its own name: Close of the old prepared form, then the
 * statement's Parse/Bind/Execute, in one group. The server answers Close with CloseComplete, which
 * pg ignores; closing a name the server no longer has is not an error.
 */
export class WithClose extends Prefixed {
  submit(connection: Wire): Error | null {
    connection.stream.cork?.()
    try {
      connection.close({ type: "S", name: this.inner.name ?? "" })
      return this.inner.submit(connection)
    } finally {
      connection.stream.uncork?.()
    }
  }
}
