/**
 * Statement execution without the per-statement overhead of `@effect/sql`'s generic path.
 *
 * `@effect/sql` runs every statement as `useSpan("sql.execute", …)` around
 * `Effect.scoped(acquirer.flatMap(execute))`. For our client the Scope never holds anything
 * (pooled statements manage their session themselves, a transaction's session belongs to the
 * transaction), and with Effect's built-in tracer the span is recorded nowhere. Both cost
 * about a third of the client's CPU per statement. Here statements run directly on the
 * transaction's connection or on the pool; the generic path is kept whenever it can be
 * observed: a tracer other than the built-in one is installed (OpenTelemetry, a test
 * tracer), or a statement transformer is set (`Statement.withTransformer`).
 */
import * as Client from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import type * as Tracer from "effect/Tracer"

/** The tracer every runtime has unless one is provided: it keeps spans in memory only. */
const builtinTracer: Tracer.Tracer = Effect.runSync(Effect.tracer)

/** Whether a span made now would be seen by anyone. */
export const spansObservable = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean =>
  fiber.currentTracer !== builtinTracer && fiber.getFiberRef(FiberRef.currentTracerEnabled)

type Operation = (connection: Connection, sql: string, params: ReadonlyArray<unknown>) => Effect.Effect<any, SqlError>

/** The shape of `@effect/sql`'s internal statement class that we rely on. */
interface StatementLike {
  readonly segments: ReadonlyArray<unknown>
  readonly acquirer: unknown
  readonly compiler: Statement.Compiler
  readonly spanAttributes: ReadonlyArray<readonly [string, unknown]>
  readonly transformRows: unknown
  compile(withoutTransform?: boolean): readonly [string, ReadonlyArray<unknown>]
  withConnection(operation: string, f: Operation, withoutTransform?: boolean): Effect.Effect<any, SqlError>
}

type StatementClass = new (
  segments: ReadonlyArray<unknown>,
  acquirer: unknown,
  compiler: Statement.Compiler,
  spanAttributes: ReadonlyArray<readonly [string, unknown]>,
  transformRows: unknown
) => StatementLike

/**
 * Wraps a client made by `SqlClient.make` so that its statements take the direct path.
 * `pooled` is the connection statements use outside a transaction.
 */
export const directStatements = <C extends Client.SqlClient>(base: C, pooled: Connection): C => {
  const Primitive = Object.getPrototypeOf(base.unsafe("SELECT 1")).constructor as StatementClass

  class DirectStatement extends Primitive {
    override withConnection(operation: string, f: Operation, withoutTransform = false): Effect.Effect<any, SqlError> {
      return Effect.withFiberRuntime((fiber) => {
        if (spansObservable(fiber) || fiber.getFiberRef(Statement.currentTransformer)._tag === "Some") {
          return super.withConnection(operation, f, withoutTransform)
        }
        const [sql, params] = this.compile(withoutTransform)
        const transaction = Context.getOption(fiber.currentContext, Client.TransactionConnection)
        return f(transaction._tag === "Some" ? transaction.value[0] : pooled, sql, params)
      })
    }
  }

  const rebase = (value: unknown): unknown =>
    value instanceof Primitive && !(value instanceof DirectStatement)
      ? new DirectStatement(value.segments, value.acquirer, value.compiler, value.spanAttributes, value.transformRows)
      : value

  const wrap = (client: Client.SqlClient): Client.SqlClient => {
    const sql = function (this: unknown, ...args: Array<any>) {
      return rebase((client as any).apply(this, args))
    } as unknown as Client.SqlClient
    Object.assign(sql, client, {
      unsafe: (text: string, params?: ReadonlyArray<unknown>) => rebase(client.unsafe(text, params as any)),
      withoutTransforms: () => {
        const inner = client.withoutTransforms()
        return inner === client ? sql : wrap(inner)
      }
    })
    ;(sql as { safe: unknown }).safe = sql
    return sql
  }

  return wrap(base) as C
}
