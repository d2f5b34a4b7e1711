//! The differential corpus: seed examples, one case per feature, generated cases.

use serde_json::{Value, json};

/// Features hookline refuses at creation (Go renders them): the corpus includes them to
/// prove they are refused, not rendered differently.
pub fn may_refuse(template: &str) -> bool {
    [
        "define", "template", "block", "call", "%*", "%.*", "%1001", "%99999", "%#v", "%+#v",
    ]
    .iter()
    .any(|f| template.contains(f))
}

/// Sensitive-trace variables, as the seed lists them.
fn trace_data() -> Value {
    let traces = json!([
        {"destination_id": "dest-123", "source_id": "src-456", "model_id": "model-789", "model_name": "users_table",
         "source_vendor": "postgres", "destination_vendor": "snowflake", "execution_context": "write_destination",
         "trace": "ERROR: duplicate key value violates unique constraint \"users_pkey\"\n\tat line 1 «ü» \u{1F600}"}
    ]);
    json!({
        "Secret": "your-webhook-secret-token",
        "Environment": "prod",
        "Timestamp": "2024-01-15T10:30:00Z",
        "SensitiveTraces": traces.to_string(),
        "DestinationId": "dest-123",
        "SourceIds": "[\"src-456\"]",
        "ModelIds": "[\"model-789\"]",
    })
}

/// Data for feature and generated cases.
fn data() -> Value {
    json!({
        "S": "héllo \"wörld\"\n\t<b>&'x'</b>",
        "U": "\u{0}\u{1}\u{7f}\u{80}\u{a0}\u{2028}\u{2029}\u{fffd}\u{1F600}\u{10FFFF}",
        "E": "",
        "N": 42,
        "Neg": -7,
        "Big": 9007199254740993i64,
        "Z": 0,
        "F": 3.25,
        "G": 1e21,
        "Tiny": 0.000001,
        "B": true,
        "No": false,
        "Nil": null,
        "L": [3, 1, 2],
        "LS": ["a", "b c", "d\"e"],
        "LE": [],
        "M": {"b": 2, "a": 1, "c": {"d": "deep"}},
        "ME": {},
        "Mixed": [1, "two", 3.5, true, null, {"k": "v"}, [1, 2]],
        "Data": {"error": {"transfer_id": "t-1", "models": ["users", "orders"], "is_full_refresh": true}},
    })
}

fn seed_cases() -> Vec<(String, Value)> {
    let d = trace_data();
    vec![
        // prequel-sensitive-trace-webhooks: the generic example's header and body templates.
        ("Authorization: Bearer {{.Secret}}\nContent-Type: application/json".to_owned(), d.clone()),
        (
            "{\"environment\": \"{{.Environment}}\", \"timestamp\": \"{{.Timestamp}}\", \"destination_url\": \"https://YOUR_ADMIN_HOST/destinations/{{.DestinationId}}\", \"errors\": {{.SensitiveTraces}}}".to_owned(),
            d.clone(),
        ),
        // The Slack example's body template.
        (
            "{\"attachments\": [{\"text\": {{printf \"*Prequel Sensitive Trace | Destination:* %s\\n\\n*<https://YOUR_ADMIN_HOST/destinations/%s|View Destination>*\\n\\n*Environment:* %s\\n\\n*Timestamp:* %s\\n\\n*Traces:*\\n```json\\n%s\\n```\" .DestinationId .DestinationId .Environment .Timestamp .SensitiveTraces | printf \"%q\"}}, \"color\": \"danger\", \"mrkdwn_in\": [\"text\"]}]}".to_owned(),
            d.clone(),
        ),
        ("https://example.com/hooks/{{.DestinationId}}?env={{.Environment | urlquery}}".to_owned(), d),
    ]
}

/// One case or more per supported feature, and the refused ones.
fn feature_templates() -> Vec<&'static str> {
    vec![
        // text, fields, missing fields, dot
        "plain text",
        "{{.S}}",
        "{{.M.a}}",
        "{{.M.c.d}}",
        "{{.Missing}}",
        "{{.M.missing}}",
        "{{.Nil}}",
        "{{.}}",
        "{{.Data.error.transfer_id}}",
        "{{.Data.error.models}}",
        "{{.L}}",
        "{{.M}}",
        "{{.Mixed}}",
        "{{.ME}}",
        "{{.LE}}",
        "{{.N}} {{.Neg}} {{.Big}} {{.Z}} {{.F}} {{.G}} {{.Tiny}} {{.B}} {{.No}}",
        // comments and trimming
        "a {{/* comment */}} b",
        "a  {{- .N -}}  b",
        "a\n{{- .N}}\n",
        "{{.N -}}\n\n x",
        "{{- /* c */ -}} x",
        // literals
        "{{\"lit\"}} {{`raw \\n`}} {{'a'}} {{1.5}} {{0x1F}} {{1e3}} {{true}} {{nil | print}}",
        // pipelines and parentheses
        "{{.S | printf \"%q\"}}",
        "{{.N | printf \"%d-%d\" 1}}",
        "{{(printf \"%s\" .S) | len}}",
        "{{len (index .LS 1)}}",
        // variables
        "{{$x := .N}}{{$x}}",
        "{{$x := 1}}{{$x = 2}}{{$x}}",
        "{{$}}",
        "{{with $x := .M}}{{$x.a}}{{end}}",
        "{{$.M.a}}",
        // if / else if / else
        "{{if .B}}yes{{end}}",
        "{{if .No}}yes{{else}}no{{end}}",
        "{{if .No}}1{{else if .Z}}2{{else if .N}}3{{else}}4{{end}}",
        "{{if .E}}e{{else}}empty{{end}}",
        "{{if .LE}}l{{else}}empty list{{end}}",
        "{{if .Nil}}n{{else}}nil{{end}}",
        "{{if and .B .N}}both{{end}}",
        "{{if or .No .Z}}x{{else}}neither{{end}}",
        "{{if not .No}}not{{end}}",
        // range
        "{{range .L}}{{.}},{{end}}",
        "{{range $i, $v := .LS}}{{$i}}={{$v}};{{end}}",
        "{{range $k, $v := .M}}{{$k}}:{{$v}} {{end}}",
        "{{range .LE}}x{{else}}none{{end}}",
        "{{range 3}}{{.}}{{end}}",
        "{{range $i := 4}}{{$i}}{{end}}",
        "{{range .L}}{{if eq . 1}}{{break}}{{end}}{{.}}{{end}}",
        "{{range .L}}{{if eq . 1}}{{continue}}{{end}}{{.}}{{end}}",
        "{{range .Mixed}}[{{.}}]{{end}}",
        "{{range .ME}}x{{else}}empty map{{end}}",
        // with
        "{{with .M.c}}{{.d}}{{end}}",
        "{{with .E}}x{{else}}no e{{end}}",
        "{{with .Nil}}x{{else}}no nil{{end}}",
        "{{with .Missing}}x{{else with .N}}n={{.}}{{end}}",
        // comparisons
        "{{eq .N 42}} {{eq .N 1 2 42}} {{ne .S \"x\"}} {{lt .N 50}} {{le .N 42}} {{gt .F 3.0}} {{ge .Neg -7}}",
        "{{eq .S .S}} {{lt \"a\" \"b\"}} {{eq .B true}} {{eq .Nil nil}}",
        "{{lt .N 1.5}}",
        "{{eq .L .L}}",
        // and / or return values
        "{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" 3}} {{or 0 \"\"}} {{not 1}} {{not .E}}",
        // len, index, slice
        "{{len .S}} {{len .L}} {{len .M}} {{len .E}} {{len .U}}",
        "{{index .L 0}} {{index .M \"b\"}} {{index .Mixed 5 \"k\"}}",
        "{{index .L 5}}",
        "{{index .M \"nope\"}}",
        "{{slice .L 1}} {{slice .L 1 2}} {{slice .LS 0 0}}",
        "{{slice \"hello\" 1 3}}",
        // print family
        "{{print 1 2 \"a\" \"b\" 3 .B .Nil}}",
        "{{println \"x\" 1}}",
        "{{print}}",
        "{{println}}",
        "{{print .L .M}}",
        // printf verbs
        "{{printf \"%s|%v|%q\" .S .S .S}}",
        "{{printf \"%d|%5d|%-5d|%05d|%+d|% d\" .N .N .N .N .N .N}}",
        "{{printf \"%x|%X|%o|%b|%c|%U|%#x|%#o|%#U\" .N .N .N .N .N .N .N .N .N}}",
        "{{printf \"%x %X\" .S \"hi\"}}",
        "{{printf \"%f|%.2f|%8.3f|%e|%E|%g|%G\" .F .F .F .F .F .F .F}}",
        "{{printf \"%v %v %g\" .G .Tiny .Big}}",
        "{{printf \"%t|%v\" .B .No}}",
        "{{printf \"%%|%s%%\" .S}}",
        "{{printf \"%v|%+v|%#v\" .M .L .LS}}",
        "{{printf \"%10s|%-10s|%.2s|%q\" \"ab\" \"ab\" \"abcdef\" 'x'}}",
        "{{printf \"%d\" .S}}",
        "{{printf \"%s\"}}",
        "{{printf \"%s\" 1 2}}",
        "{{printf \"%!\" .N}}",
        "{{printf \"%[2]d %[1]d\" 1 2}}",
        "{{printf \"%z\" .N}}",
        "{{printf \"%v\" .Nil}}",
        "{{printf \"%s\" .Nil}}",
        "{{printf \"%d\" .F}}",
        "{{printf \"%q\" .N}}",
        "{{printf \"%v\" .Mixed}}",
        "{{printf \"%s\" .Data}}",
        "{{printf \"%6.2f%%\" 12.3456}}",
        "{{printf \"%1000d\" 1 | len}}",
        // %q with Unicode and control characters
        "{{printf \"%q\" .U}}",
        "{{printf \"%+q\" .U}}",
        "{{printf \"%#q\" .S}}",
        "{{printf \"%q\" \"\\u2028 \\x00 \\x7f é 😀\"}}",
        "{{.U | printf \"%q\"}}",
        "{{printf \"%q\" .LS}}",
        "{{printf \"%x\" .U}}",
        // escapers
        "{{html .S}} {{js .S}} {{urlquery .S}}",
        "{{html .U}}|{{js .U}}|{{urlquery .U}}",
        "{{.S | html}}",
        "{{js \"</script>\\u2028'\\\"\"}}",
        "{{urlquery \"a b&c=d/é\"}}",
        "{{html 1 \"<\" 2}}",
        "{{js .L}}",
        // errors in both
        "{{.N.x}}",
        "{{index .N 1}}",
        "{{len .N}}",
        "{{if}}{{end}}",
        "{{range}}",
        "{{end}}",
        "{{.S",
        "{{nosuchfunc 1}}",
        "{{lt .S 1}}",
        "{{$undefined}}",
        "{{slice .L 2 1}}",
        "{{else}}",
        "x{{- end -}}",
        "{{if 1}}{{end}}{{end}}",
        "{{\"}}\"}}{{end}}",
        "{{/* {{end}} */}}ok",
        "{{`}}`}}{{if 1}}y{{end}}",
        "{{'}'}}",
        "{{if .B}}open",
        "{{range .L}}x",
        "{{with .M}}{{if 1}}x{{end}}",
        // refused: named templates, call, dynamic widths, huge widths
        "{{define \"x\"}}X{{end}}{{template \"x\"}}",
        "{{block \"b\" .}}B{{end}}",
        "{{call .N}}",
        "{{printf \"%*d\" 5 1}}",
        "{{printf \"%.*f\" 2 1.5}}",
        "{{printf \"%1001d\" 1}}",
        "{{printf \"%99999d\" 1}}",
    ]
}

/// A small deterministic generator (xorshift) of templates over the supported features.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    fn operand(&mut self, depth: u32) -> String {
        let simple = [
            ".S",
            ".U",
            ".E",
            ".N",
            ".Neg",
            ".Big",
            ".Z",
            ".F",
            ".G",
            ".Tiny",
            ".B",
            ".No",
            ".Nil",
            ".L",
            ".LS",
            ".M",
            ".M.a",
            ".M.c.d",
            ".Missing",
            ".Mixed",
            "\"str\"",
            "\"é\\n\\t\\\"q\\\"\"",
            "`raw`",
            "0",
            "1",
            "-3",
            "2.5",
            "1e6",
            "true",
            "false",
            "'x'",
            "(index .L 1)",
            "(index .LS 2)",
            "(index .M \"b\")",
            "(len .LS)",
            "(slice .L 1)",
        ];
        if depth > 0 && self.next().is_multiple_of(4) {
            format!("({})", self.call(depth - 1))
        } else {
            (*self.pick(&simple)).to_owned()
        }
    }

    fn call(&mut self, depth: u32) -> String {
        let formats = [
            "%s", "%v", "%q", "%d", "%x", "%X", "%t", "%%", "%5d", "%-6s|", "%05d", "%.3s",
            "%8.2f", "%e", "%g", "%+q", "%#v", "%c", "%U", "%o", "[%v %v]", "%s-%d", "%10.4q",
            "%x %q",
        ];
        match self.next() % 12 {
            0..=2 => {
                let n = 1 + self.next() % 3;
                let args: Vec<String> = (0..n).map(|_| self.operand(depth)).collect();
                format!("printf \"{}\" {}", self.pick(&formats), args.join(" "))
            }
            3 => format!("print {} {}", self.operand(depth), self.operand(depth)),
            4 => format!("println {}", self.operand(depth)),
            5 => format!("html {}", self.operand(depth)),
            6 => format!("js {}", self.operand(depth)),
            7 => format!("urlquery {}", self.operand(depth)),
            8 => format!(
                "{} {} {}",
                self.pick(&["eq", "ne", "lt", "le", "gt", "ge"]),
                self.operand(depth),
                self.operand(depth)
            ),
            9 => format!(
                "{} {} {}",
                self.pick(&["and", "or"]),
                self.operand(depth),
                self.operand(depth)
            ),
            10 => format!("not {}", self.operand(depth)),
            _ => format!("len {}", self.operand(depth)),
        }
    }

    fn action(&mut self) -> String {
        let (l, r) = (*self.pick(&["{{", "{{- "]), *self.pick(&["}}", " -}}"]));
        match self.next() % 8 {
            0 => format!("{l}{}{r}", self.operand(2)),
            1 | 2 => format!("{l}{}{r}", self.call(2)),
            3 => format!("{l}{} | printf \"%q\"{r}", self.operand(1)),
            4 => format!("{l}if {}{r}T{{{{else}}}}F{{{{end}}}}", self.operand(1)),
            5 => format!(
                "{{{{range $i, $v := {}}}}}{{{{$i}}}}={{{{$v}}}},{{{{else}}}}none{{{{end}}}}",
                self.pick(&[".L", ".LS", ".M", ".LE", ".Mixed"])
            ),
            6 => format!("{l}with {}{r}<{{{{.}}}}>{{{{end}}}}", self.operand(1)),
            _ => (*self.pick(&[" ", "\n", "text ", " é ", "\t"])).to_owned(),
        }
    }
}

fn generated(count: usize) -> Vec<String> {
    let mut g = Gen(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|_| {
            let n = 1 + g.next() % 4;
            (0..n).map(|_| g.action()).collect::<String>()
        })
        .collect()
}

/// Every case: (template, data).
pub fn all() -> Vec<(String, Value)> {
    let data = data();
    let mut cases = seed_cases();
    cases.extend(
        feature_templates()
            .into_iter()
            .map(|t| (t.to_owned(), data.clone())),
    );
    cases.extend(generated(4000).into_iter().map(|t| (t, data.clone())));
    cases.extend(null_fields());
    cases
}

/// Fields of no value (a JSON null, a missing key), where Go stops with a nil-pointer
/// error and gotmpl went on printing `<no value>`: found by the differential fuzz target.
fn null_fields() -> Vec<(String, Value)> {
    let data = json!({"N": null, "M": {"a": 1, "n": null}, "L": [{"k": 1}, null], "S": "s"});
    [
        "{{.N}}",
        "{{.N.x}}",
        "{{.M.n}}",
        "{{.M.n.x}}",
        "{{.M.missing}}",
        "{{.M.missing.x}}",
        "{{.Missing.x}}",
        "{{range .L}}{{.k}};{{end}}",
        "{{with .M}}{{.n.x}}{{end}}",
        "{{$m := .M}}{{$m.a}} {{$m.n.x}}",
        "{{(.M).a}}",
        "{{(.M).n.x}}",
        "{{if .N.x}}y{{end}}",
        "{{printf \"%v\" .M.n.x}}",
        "{{.S.x}}",
        "{{len .M.n.x}}",
        // Assignments and variables out of scope (the fuzz target's first find).
        "{{$x = 7}}{{$x}}",
        "{{$x := 1}}{{$x = 7}}{{$x}}",
        "{{if .S}}{{$y := 2}}{{end}}{{$y = 3}}",
        "{{range $i, $v := .L}}{{$i = 9}}{{end}}{{$i}}",
        "{{with $m := .M}}{{$m.a}}{{else}}{{$m}}{{end}}",
        // Comments that do not end at the delimiter (the second find).
        "{{- /* a comment */ }}",
        "{{/* a */ -}} x",
        "{{- /* a */ -}} x",
        "{{/* a */}}x",
        "{{/* a */ }}x",
        "{{/* a */-}}x",
        // Operands with nothing between them (the third find), and what Go takes.
        "{{urlquery ..}}",
        "{{print . .}}",
        "{{print \"a\"\"b\"}}",
        "{{print .S$}}",
        "{{print (.M).a 1.5 -2 1e3 0x1F}}",
        "{{print .M.a}}{{$.S}}{{$x := .M}}{{$x.a}}",
        "{{print \"a\".x}}",
        "{{if(eq .I 42)}}y{{end}}",
        "{{len(.L)}}",
        // A quoted string across lines (the fourth find); a raw one may.
        "{{print \"a\nb\"}}",
        "{{print 'a\n'}}",
        "{{print `a\nb`}}",
        // A comment holding a delimiter (the fifth find).
        "{{- /* a }} b */}} {{0x1F}}",
        "{{/* {{.S}} */}}x{{/* */ -}} y",
        "a {{- /* a */}} x",
        "a {{- /**/}} x",
        "a {{/**/}} x",
        // `index` of no index (the sixth find).
        "{{index .M }}",
        "{{.L | index}}",
        "{{index .L 1}} {{index .M \"a\"}} {{.L | index 1}}",
        "{{index}}",
        "{{index .Missing}}",
        "{{.N | index}}",
        // What may follow else, end (the thirteenth find).
        "{{if .N}}a{{else. }}b{{end}}",
        "{{if .N}}a{{else .S}}b{{end}}",
        "{{if .N}}a{{else if .S}}b{{end}}",
        "{{if .N}}a{{else with .S}}{{.}}{{end}}",
        "{{with .N}}a{{else if .S}}b{{end}}",
        "{{with .N}}a{{else with .S}}{{.}}{{end}}",
        "{{if .N}}{{with .S}}a{{else with .B}}b{{end}}{{else if .S}}c{{end}}",
        "{{if .S}}a{{end .S}}",
        "{{range .L}}{{break 1}}{{end}}",
        "{{if .N}}a{{- else -}} b {{- end}}",
        "{{if .N}}a{{else}}{{ifx}}{{end}}",
        // Control characters inside an action (the seventh find); in text they print.
        "{{slice .S \u{c} 4}}",
        "{{print\u{b}.S}}",
        "{{print\t.S\r\n}}",
        "a\u{c}b{{.S}}",
        // A field given arguments (the eighth find): no value past a missing key.
        "{{.M.m.deep 1}}",
        "{{.M.missing.x 43}}",
        "{{.M.missing 43}}",
        "{{.M.a 43}}",
        "{{.N.x 1}}",
        "{{$m := .M}}{{$m.zz.y 1}}{{$m.a 2}}",
        // What may end a name (the ninth find).
        "{{print .S-2}}",
        "{{print .S -2}}",
        "{{$x:=1}}{{$x}}",
        "{{$x=1}}",
        "{{.S-}}",
        "{{.S -}} x",
        "{{print .M.a,}}",
        "{{range $i,$v := .L}}{{$i}}{{end}}",
        "{{.Über}}",
        "{{print .S\"x\"}}",
        "{{if(eq .I 42)}}y{{end}}{{len .L}}",
        // A number then a field (the tenth find).
        "{{or .E 0..B}}",
        "{{print 0.5 .5 1e+3 0x1p-2 1_000}}",
        "{{print 1.5.B}}",
        "{{print 0x1_}}",
        "{{range.Empty}}never{{else}}empty{{end}}",
        "{{.I|}}",
        "{{.I | }}x{{.S | printf \"%q\" | -}} y",
        "{{|1}}",
        "{{1||}}",
        "{{$x := 1 |}}{{$x}}",
        "{{if(.B)}}y{{else}}n{{end}}",
        "{{print 1__0}}",
        "{{print 1_000 0x_1F 0b1_0}}",
        // Escapes Go's strconv.Unquote refuses (the eleventh find), and those it takes.
        "{{print \"a\\\u{0}b\"}}",
        "{{print \"\\q\"}}",
        "{{print \"\\'\"}}",
        "{{print '\\\"'}}",
        "{{print \"\\a\\x41\\u00e9\\U0001F600\\101\\\\\\\"\"}}",
        "{{print '\\x41' '\\'' 'ab'}}",
        "{{print \"\\400\"}}",
        "{{print \"\\uD800\"}}",
        // Octal-looking integers with an 8 or a 9 (a fuzz find after the slice inside a character), and their kin.
        "{{print 083}}",
        "{{09}}",
        "{{0_9}}",
        "{{-083}}",
        "{{print 017 00 0_0 08.5 09e1 0o17}}",
        // A field after a constant (the next find): Go refuses it at parse time.
        "{{print nil.F}}",
        "{{print true.F .S}}",
        "{{false.x}}",
        "{{print nil .F}}",
        "{{len.L}}",
        // A number followed at once by a sign (the next find): Go reads a complex number.
        "{{eq .I .0+2.0}}",
        "{{print 1+2}}",
        "{{print 1-2 3}}",
        "{{print 1 -2 +3}}",
        // A name or a number right after an operand (the next find).
        "{{or .E \"default\"not .B}}",
        "{{print \"a\"1}}",
        "{{print (1)x}}",
        "{{print 'a'b}}",
        "{{print `r`ü}}",
        // A hexadecimal point without an exponent (the next find), and numbers in bases.
        "{{lt 1.5 0x2.0B}}",
        "{{print 0x2.0B}}",
        "{{print 0x1.8p1 0x.8p1 0X1P-2 0x_1.8p1 1.e3 0B11 0O17}}",
        "{{0b1.0}}",
        "{{0o78}}",
        "{{print 1e+3 0x1p-2}}",
    ]
    .iter()
    .map(|t| ((*t).to_owned(), data.clone()))
    .collect()
}
