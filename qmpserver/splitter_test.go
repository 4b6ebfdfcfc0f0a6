package qmpserver

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// split feeds input to a fresh splitter and returns what came out: "v:" and
// a value, "e:" and an error, and "fatal:" when feed fails.
func split(input string) []string {
	var sp splitter
	var out []string
	value := func(v []byte) { out = append(out, "v:"+string(v)) }
	parseErr := func(err error) { out = append(out, "e:"+err.Error()) }
	for i := range len(input) {
		if err := sp.feed(input[i], value, parseErr); err != nil {
			return append(out, "fatal:"+err.Error())
		}
	}
	sp.flush(value)
	return out
}

func TestSplitter(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"one object", `{"execute":"stop"}`, []string{`v:{"execute":"stop"}`}},
		{"line", "{\"execute\":\"stop\"}\r\n", []string{`v:{"execute":"stop"}`}},
		{"back to back", `{"a":1}{"b":2}`, []string{`v:{"a":1}`, `v:{"b":2}`}},
		{"whitespace between", " \t{\"a\":1}\n\n {\"b\":2} ", []string{`v:{"a":1}`, `v:{"b":2}`}},
		{"spans lines", "{\n\"a\": [1,\n2]\n}", []string{"v:{\n\"a\": [1,\n2]\n}"}},
		{"braces in strings", `{"a":"}{]["}`, []string{`v:{"a":"}{]["}`}},
		{"escaped quote", `{"a":"x\"}"}`, []string{`v:{"a":"x\"}"}`}},
		{"escaped backslash", `{"a":"x\\"}`, []string{`v:{"a":"x\\"}`}},
		{"single quotes", `{'a':'b'}`, []string{`v:{"a":"b"}`}},
		{"double quote in single quotes", `{'a':'say "hi"'}`, []string{`v:{"a":"say \"hi\""}`}},
		{"escaped apostrophe", `{'a':'it\'s', "b":"\'"}`, []string{`v:{"a":"it's", "b":"'"}`}},
		{"array", `[1,2]`, []string{`v:[1,2]`}},
		{"top-level string", `"x"`, []string{`v:"x"`}},
		{"top-level number", "42 ", []string{`v:42`}},
		{"top-level keyword at end of input", "true", []string{`v:true`}},
		{"number then object", `7{"a":1}`, []string{`v:7`, `v:{"a":1}`}},
		{"mismatched closer is left to the parser", `{"a":1]`, []string{`v:{"a":1]`}},
		{"stray closer", `}{"a":1}`, []string{`e:JSON parse error, stray '}'`, `v:{"a":1}`}},
		{"stray comma", `,`, []string{`e:JSON parse error, stray ','`}},
		{"unfinished object dropped at end of input", `{"a":`, nil},
		{"reset by control character", "{\"a\":\x01{\"b\":2}", []string{`e:JSON parse error, stray '\x01'`, `v:{"b":2}`}},
		{"reset by 0xff", "{\"a\":\xff{\"b\":2}", []string{`e:JSON parse error, stray '\xff'`, `v:{"b":2}`}},
		{"reset inside a string", "{\"a\":\"x\x00{\"b\":2}", []string{`e:JSON parse error, stray '\x00' in string`, `v:{"b":2}`}},
		{"newline inside a string", "{\"a\":\"x\n{\"b\":2}", []string{`e:JSON parse error, stray '\x0a' in string`, `v:{"b":2}`}},
		{"reset byte with nothing pending", "\xff{\"b\":2}", []string{`e:JSON parse error, stray '\xff'`, `v:{"b":2}`}},
		{"UTF-8 in strings", `{"a":"é"}`, []string{`v:{"a":"é"}`}},
		{"nesting too deep", strings.Repeat("[", maxNesting+1) + "]]]\n{\"b\":2}", []string{`e:JSON parse error, nesting too deep`, `v:{"b":2}`}},
		{"nesting at the limit", strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting), []string{"v:" + strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := split(tt.input); !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestSplitterLimit(t *testing.T) {
	var sp splitter
	value := func([]byte) {}
	parseErr := func(error) {}
	input := `{"a":"` + strings.Repeat("x", maxInput)
	for i := range len(input) {
		if err := sp.feed(input[i], value, parseErr); err != nil {
			if !errors.Is(err, errInputTooLarge) || i != maxInput {
				t.Fatalf("byte %d: %v, want errInputTooLarge at byte %d", i, err, maxInput)
			}
			return
		}
	}
	t.Fatal("no error past the limit")
}

func BenchmarkSplitter(b *testing.B) {
	input := []byte(`{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.1:4444", "detach": true}, "id": 17}` + "\n")
	var sp splitter
	n := 0
	value := func([]byte) { n++ }
	parseErr := func(error) {}
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		for _, c := range input {
			sp.feed(c, value, parseErr)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/command")
}
