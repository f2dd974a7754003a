// The portal's ADQL editor: CodeMirror 6 with an ADQL dialect of @codemirror/lang-sql.
// Built into ../static/editor.js by `npm ci && npm run build` (see README, "Portal").
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, highlightActiveLine } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from "@codemirror/language";
import { autocompletion, completionKeymap } from "@codemirror/autocomplete";
import { sql, SQLDialect, PostgreSQL } from "@codemirror/lang-sql";

const ADQL_WORDS =
  "top offset contains intersects point circle box polygon region distance area centroid coord1 coord2 " +
  "coordsys ivo_healpix_index ivo_hasword ivo_nocasematch ivo_string_agg in_unit lower upper " +
  "mod power sqrt log log10 exp abs ceiling floor round truncate pi rand sin cos tan asin acos atan atan2 " +
  "degrees radians cast coalesce";

// ADQL is translated to PostgreSQL: its keywords are PostgreSQL's plus ADQL's own (StandardSQL's spec is empty).
export const ADQL = SQLDialect.define({
  keywords: PostgreSQL.spec.keywords + " " + ADQL_WORDS,
  types: PostgreSQL.spec.types,
  builtin: "",
  identifierQuotes: '"',
  caseInsensitiveIdentifiers: true,
});

// Make an editor in `parent`; `options.label` is its accessible name, `options.onRun` is called on Ctrl-Enter,
// `options.schema` maps table names to column names (completion). Returns {getValue, setValue, setSchema, view}.
export function create(parent, doc, options = {}) {
  const run = () => {
    if (options.onRun) options.onRun();
    return true;
  };
  const extensions = (schema) => [
    lineNumbers(),
    history(),
    bracketMatching(),
    highlightActiveLine(),
    syntaxHighlighting(defaultHighlightStyle),
    autocompletion(),
    sql({ dialect: ADQL, schema: schema || {}, upperCaseKeywords: true }),
    keymap.of([{ key: "Mod-Enter", run }, ...defaultKeymap, ...historyKeymap, ...completionKeymap]),
    EditorView.lineWrapping,
    EditorView.contentAttributes.of({ "aria-label": options.label || "ADQL query", "aria-multiline": "true" }),
  ];
  const view = new EditorView({ state: EditorState.create({ doc, extensions: extensions(options.schema) }), parent });
  return {
    view,
    getValue: () => view.state.doc.toString(),
    setValue: (text) => view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } }),
    setSchema: (schema) =>
      view.setState(EditorState.create({ doc: view.state.doc.toString(), extensions: extensions(schema) })),
  };
}
