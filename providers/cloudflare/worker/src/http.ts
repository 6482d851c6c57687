// HTTP helpers of the Worker's API: JSON answers, errors, the shared
// secret's check.

/** The header holding the shared secret on relayed requests, whose
 * Authorization header is the agent's own. */
export const WORKER_AUTH_HEADER = "Agcluster-Worker-Authorization";

/** The header every agent response carries; the Worker's own answers never
 * do, so the gateway knows when the agent was not reached. */
export const AGENT_HEADER = "Agcluster-Agent";

/** What ids the Worker accepts: agent ids and session ids. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** validId reports whether id is an acceptable agent id. */
export function validId(id: string): boolean {
	return ID_RE.test(id);
}

/** json answers status with v as JSON. */
export function json(status: number, v: unknown): Response {
	return new Response(JSON.stringify(v), {
		status,
		headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
	});
}

/** error answers status with the agent's error shape, {"error": {code, message}}. */
export function error(status: number, code: string, message: string): Response {
	return json(status, { error: { code, message } });
}

/** bearer returns the token of an "Authorization: Bearer <token>" value. */
export function bearer(value: string | null): string | null {
	if (value === null || !value.startsWith("Bearer ")) {
		return null;
	}
	return value.slice("Bearer ".length);
}

const encoder = new TextEncoder();

/** sameSecret compares two secrets in constant time (of their digests, so
 * their lengths leak nothing either). */
export async function sameSecret(got: string, want: string): Promise<boolean> {
	const [a, b] = await Promise.all([
		crypto.subtle.digest("SHA-256", encoder.encode(got)),
		crypto.subtle.digest("SHA-256", encoder.encode(want)),
	]);
	return crypto.subtle.timingSafeEqual(a, b);
}

/** readJSON reads a request's JSON object body (at most 1 MiB). */
export async function readJSON<T>(req: Request): Promise<T> {
	const text = await req.text();
	if (text.length > 1 << 20) {
		throw new BadRequest("the body is larger than 1 MiB");
	}
	let v: unknown;
	try {
		v = JSON.parse(text);
	} catch (e) {
		throw new BadRequest(`the body is not JSON: ${(e as Error).message}`);
	}
	if (typeof v !== "object" || v === null || Array.isArray(v)) {
		throw new BadRequest("the body must be a JSON object");
	}
	return v as T;
}

/** BadRequest is a client error answered with 400. */
export class BadRequest extends Error {}

/** HTTPError is an error answered with its status and code. */
export class HTTPError extends Error {
	constructor(
		readonly status: number,
		readonly code: string,
		message: string,
	) {
		super(message);
	}
}

/** answerError turns a thrown error into the Worker's error answer. */
export function answerError(e: unknown): Response {
	if (e instanceof HTTPError) {
		return error(e.status, e.code, e.message);
	}
	if (e instanceof BadRequest) {
		return error(400, "bad_request", e.message);
	}
	const message = e instanceof Error ? e.message : String(e);
	console.error("agcluster worker error:", message);
	return error(500, "internal", message);
}
