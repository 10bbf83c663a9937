// Preact + htm: components written as tagged templates, no build step.
// Every value interpolated into a template is a text node or a property, never parsed HTML.
import { h, render, Fragment } from "./vendor/preact.js";
import htm from "./vendor/htm.js";

export const html = htm.bind(h);
export { h, render, Fragment };
export {
  useState, useEffect, useLayoutEffect, useRef, useMemo, useCallback,
} from "./vendor/hooks.js";
