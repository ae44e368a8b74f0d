// Navigation inside the console, apart from main.ts so views can navigate
// without importing the shell.

/** BASE is where PM serves the console. */
export const BASE = "/ui";

let renderer: () => void = () => {};
let navigated = false;

/** setRenderer installs the shell's render function. */
export function setRenderer(r: () => void): void {
  renderer = r;
}

/** hasNavigated reports whether the user moved since the first load. */
export function hasNavigated(): boolean {
  return navigated;
}

/** go navigates to a console path ("/ui/..."). */
export function go(path: string, replaceEntry = false): void {
  navigated = true;
  if (replaceEntry) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  renderer();
}

/** markNavigated records a history move (back/forward). */
export function markNavigated(): void {
  navigated = true;
}
