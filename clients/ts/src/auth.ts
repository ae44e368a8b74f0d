import type { Interceptor } from "@connectrpc/connect";

/**
 * TokenSource is a bearer token, or a function that returns the current one
 * (for tokens that expire, such as OIDC access tokens, fetched or refreshed
 * by the caller).
 */
export type TokenSource = string | (() => string | Promise<string>);

/**
 * bearerToken returns an interceptor that sends `Authorization: Bearer TOKEN`
 * with every call, for PM's API tokens (AUTH_TOKENS_FILE) and OIDC tokens.
 * Pass it in a transport's `interceptors`; it works with every transport of
 * connect-node and connect-web (Connect, gRPC, gRPC-Web).
 *
 * A string token is checked at once; a function's result at every call.
 * Surrounding whitespace (a token read from a file with its newline) is
 * dropped; an empty token, or one with whitespace inside, is refused with an
 * error that does not repeat the token.
 */
export function bearerToken(token: TokenSource): Interceptor {
  if (typeof token === "string") {
    const value = checked(token);
    return (next) => (req) => {
      req.header.set("Authorization", `Bearer ${value}`);
      return next(req);
    };
  }
  if (typeof token !== "function") {
    throw new TypeError("bearerToken: the token must be a string or a function returning one");
  }
  return (next) => async (req) => {
    req.header.set("Authorization", `Bearer ${checked(await token())}`);
    return next(req);
  };
}

// checked trims a token and refuses what no server would accept, so that a
// misconfiguration fails in the caller instead of as a 401 from PM.
function checked(token: unknown): string {
  if (typeof token !== "string") {
    throw new TypeError("bearerToken: the token source returned something other than a string");
  }
  const value = token.trim();
  if (value === "") {
    throw new Error("bearerToken: the token is empty");
  }
  if (/\s/.test(value)) {
    throw new Error("bearerToken: the token contains whitespace");
  }
  return value;
}
