package dashboards

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Source runs dashboards' queries on a Prometheus over a time range, as
// Grafana would: variables resolved, $__rate_interval expanded.
type Source struct {
	api            promv1.API
	client         api.Client // for range queries, decoded here as they are read
	From, To       time.Time
	Step           time.Duration // resolution of range queries (Grafana's $__interval)
	ScrapeInterval time.Duration // Prometheus's scrape interval, for $__rate_interval
}

// NewSource is a Source on the Prometheus at url (http://host:port).
func NewSource(url string, from, to time.Time, step, scrape time.Duration) (*Source, error) {
	c, err := api.NewClient(api.Config{Address: url, RoundTripper: limitedReplies{api.DefaultRoundTripper}})
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: %w", url, err)
	}
	if !to.After(from) || step <= 0 || scrape <= 0 {
		return nil, fmt.Errorf("query range %s..%s step %s scrape interval %s: want from before to and positive durations", from, to, step, scrape)
	}
	return &Source{api: promv1.NewAPI(c), client: c, From: from, To: to, Step: step, ScrapeInterval: scrape}, nil
}

// MaxReply is the most of one Prometheus reply a Source reads: a reply
// that never ended (a walk's fake Prometheus) grew report to 2 GB before
// the Go runtime ran out of memory. A dashboard's queries over an hour
// come to a few MiB.
const MaxReply = 64 << 20

// limitedReplies cuts every reply's body at MaxReply, with an error.
type limitedReplies struct{ rt http.RoundTripper }

// ReplyTimeout bounds one Prometheus request, its reply read whole: a
// "Prometheus" sending a byte a second held report for good (found by a
// walk).
var ReplyTimeout = 2 * time.Minute

func (l limitedReplies) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), ReplyTimeout)
	resp, err := l.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return resp, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: MaxReply, cancel: cancel}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left   int64
	cancel context.CancelFunc // ends the request's ReplyTimeout
}

func (b *limitedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.cancel != nil {
		b.cancel()
	}
	return err
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.read(p)
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no whole reply in %v: %w", ReplyTimeout, err)
	}
	return n, err
}

func (b *limitedBody) read(p []byte) (int, error) {
	over := fmt.Errorf("a reply over %d MiB: not read further (is it a Prometheus?)", MaxReply>>20)
	if b.left < 0 {
		return 0, over
	}
	if b.left == 0 {
		// A read that ended exactly at MaxReply: one byte more tells a
		// reply of exactly MaxReply (EOF) from a longer one. (Refused
		// as over before; found by a review walk.)
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			b.left = -1
			return 0, over
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left+1] // one byte past tells a reply of exactly MaxReply from a longer one
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, over
	}
	return n, err
}

// RateInterval is Grafana's $__rate_interval: the larger of the step plus
// a scrape interval and four scrape intervals, so that every rate window
// holds at least two samples.
func (s *Source) RateInterval() time.Duration {
	return max(s.Step+s.ScrapeInterval, 4*s.ScrapeInterval)
}

// Expand replaces Grafana's variables in expr: $__rate_interval,
// $__interval, $__range, and $name or ${name} from vars.
func (s *Source) Expand(expr string, vars map[string]string) string {
	r := []string{"$__rate_interval", model.Duration(s.RateInterval()).String(), "$__interval", model.Duration(s.Step).String(),
		"$__range", model.Duration(max(s.To.Sub(s.From), time.Second).Truncate(time.Second)).String()}
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	// Longer names first, so that $vm does not eat into $vmname.
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		r = append(r, "${"+n+"}", vars[n], "$"+n, vars[n])
	}
	return strings.NewReplacer(r...).Replace(expr)
}

// ErrNoValues says a variable's label_values query found nothing over the
// range: nothing that feeds the dashboard was scraped then.
var ErrNoValues = errors.New("no values")

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// Variables resolves d's query variables in order, as Grafana does by
// default: a multi-value variable with All gets its All value, or a regex
// of all its values where it has none; any other the first of its values.
// set holds values chosen instead: for a multi-value variable a regex,
// unless it is one of the variable's values exactly, which is then matched
// as it is (web(1)+x, not the regex web(1)+x). A variable with no value is
// left out of vars, and the error, wrapping ErrNoValues, names every such
// one; vars holds the others, for the panels that do not use those. values
// holds the values found of each variable asked (all but those given a
// value in set that are not multi-value).
func (s *Source) Variables(ctx context.Context, d Dashboard, set map[string]string) (vars map[string]string, values map[string][]string, err error) {
	vars, values = map[string]string{}, map[string][]string{}
	var none []error
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		val, isSet := set[v.Name]
		if isSet && !v.Multi {
			vars[v.Name] = val
			continue
		}
		found, err := s.VariableValues(ctx, v, vars)
		if err != nil {
			return nil, nil, err
		}
		values[v.Name] = found
		if isSet {
			if slices.Contains(found, val) {
				val = promRegexQuote(val)
			}
			vars[v.Name] = val
			continue
		}
		if len(found) == 0 {
			var given []string // what may have left it none
			for k, val := range set {
				if _, ok := vars[k]; ok {
					given = append(given, k+"="+val)
				}
			}
			slices.Sort(given)
			with := ""
			if len(given) > 0 {
				with = " with " + strings.Join(given, ", ")
			}
			none = append(none, fmt.Errorf("dashboard %q: variable %s: %w%s from %s to %s", d.Title, v.Name, ErrNoValues, with, s.From.Format(time.RFC3339), s.To.Format(time.RFC3339)))
			continue
		}
		switch {
		case v.Multi && v.IncludeAll && v.AllValue != "":
			vars[v.Name] = v.AllValue
		case v.Multi && v.IncludeAll:
			quoted := make([]string, len(found))
			for i, val := range found {
				quoted[i] = promRegexQuote(val)
			}
			vars[v.Name] = "(" + strings.Join(quoted, "|") + ")"
		default:
			vars[v.Name] = s.firstWithData(ctx, v, vars, found)
		}
	}
	return vars, values, errors.Join(none...)
}

// firstWithData is the first of found, a variable's values, that a series
// with samples in the range has: Prometheus's label values take in
// series of the last two hours with none in it (walk 156: a report of
// the last 3 minutes drew a predict serve's vm gone since, six panels
// empty, where another had data). Found[0] where that cannot be told.
func (s *Source) firstWithData(ctx context.Context, v Variable, vars map[string]string, found []string) string {
	if len(found) == 1 {
		return found[0] // nothing to choose: no query
	}
	m := labelValues.FindStringSubmatch(v.Query.(string)) // VariableValues found values: it matches
	sets, _, _, err := s.api.Series(ctx, []string{s.Expand(m[1], vars)}, s.From, s.To)
	if err != nil {
		return found[0]
	}
	have := map[string]bool{}
	for _, ls := range sets {
		have[string(ls[model.LabelName(m[2])])] = true
	}
	for _, val := range found {
		if have[val] {
			return val
		}
	}
	return found[0]
}

// Uses says whether any of p's queries refers to variable name.
func (p Panel) Uses(name string) bool {
	return slices.ContainsFunc(p.Targets, func(t Target) bool { return ExprUses(t.Expr, name) })
}

// ExprUses says whether query expr refers to variable name.
func ExprUses(expr, name string) bool {
	return strings.Contains(expr, "${"+name+"}") || regexp.MustCompile(`\$`+regexp.QuoteMeta(name)+`\b`).MatchString(expr)
}

// promRegexQuote is a regex matching s alone, escaped for a PromQL string.
func promRegexQuote(s string) string {
	return strings.ReplaceAll(regexp.QuoteMeta(s), `\`, `\\`)
}

// VariableValues runs a query variable's label_values over the range.
func (s *Source) VariableValues(ctx context.Context, v Variable, vars map[string]string) ([]string, error) {
	q, _ := v.Query.(string)
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		return nil, fmt.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, q)
	}
	vals, _, _, err := s.api.LabelValues(ctx, m[2], []string{s.Expand(m[1], vars)}, s.From, s.To)
	if err != nil {
		return nil, fmt.Errorf("variable %s: %w", v.Name, err)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	sort.Strings(out)
	return out, nil
}

// Series is one series of a range query's result.
type Series struct {
	Labels map[string]string
	Times  []time.Time
	Values []float64
}

// Limits on one range query's reply, which Range decodes a sample at a
// time: a reply of a million one-sample series (45 MB, under MaxReply)
// took report past 2 GB, decoded whole, and the Go runtime killed it
// (found by a hostile-input walk). A dashboard's panel has tens of series
// of at most 11 000 samples (report's own limit).
var (
	MaxSeries  = 10000
	MaxSamples = 4 << 20
)

// Range runs expr (variables already expanded) as a range query.
func (s *Source) Range(ctx context.Context, expr string) ([]Series, error) {
	out, err := s.rangeQuery(ctx, expr)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	return out, nil
}

func (s *Source) rangeQuery(ctx context.Context, expr string) ([]Series, error) {
	u := s.client.URL("/api/v1/query_range", nil)
	q := u.Query()
	q.Set("query", expr)
	q.Set("start", strconv.FormatFloat(float64(s.From.UnixNano())/1e9, 'f', -1, 64))
	q.Set("end", strconv.FormatFloat(float64(s.To.UnixNano())/1e9, 'f', -1, 64))
	q.Set("step", strconv.FormatFloat(s.Step.Seconds(), 'f', -1, 64))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, body, err := s.client.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var status, errType, errMsg, resultType string
	var out []Series
	samples := 0
	err = walkObject(dec, func(key string) error {
		switch key {
		case "status":
			return dec.Decode(&status)
		case "errorType":
			return dec.Decode(&errType)
		case "error":
			return dec.Decode(&errMsg)
		case "data":
			return walkObject(dec, func(key string) error {
				switch key {
				case "resultType":
					return dec.Decode(&resultType)
				case "result":
					return walkArray(dec, func() error {
						if len(out) == MaxSeries {
							return fmt.Errorf("more than %d series: not drawn (narrow the query, with --var)", MaxSeries)
						}
						// A sample at a time: one series of 8 M samples,
						// decoded whole before it was counted, took 1 GB
						// (found by a review walk).
						sr := Series{Labels: map[string]string{}}
						err := walkObject(dec, func(key string) error {
							switch key {
							case "metric":
								return dec.Decode(&sr.Labels)
							case "values":
								return walkArray(dec, func() error {
									if samples++; samples > MaxSamples {
										return fmt.Errorf("more than %d samples: not drawn (a shorter range, or a longer --step)", MaxSamples)
									}
									var p [2]any
									if err := dec.Decode(&p); err != nil {
										return err
									}
									t, okT := p[0].(float64)
									str, okV := p[1].(string)
									v, perr := strconv.ParseFloat(str, 64)
									if !okT || !okV || perr != nil {
										return fmt.Errorf("a sample %v: want [unix time, \"value\"]", p)
									}
									if !math.IsNaN(v) && !math.IsInf(v, 0) {
										sec, frac := math.Modf(t)
										sr.Times = append(sr.Times, time.Unix(int64(sec), int64(math.Round(frac*1e3))*1e6))
										sr.Values = append(sr.Values, v)
									}
									return nil
								})
							}
							var skip json.RawMessage
							return dec.Decode(&skip)
						})
						if err != nil {
							return err
						}
						if sr.Labels == nil {
							sr.Labels = map[string]string{}
						}
						if len(sr.Values) > 0 {
							out = append(out, sr)
						}
						return nil
					})
				}
				var skip json.RawMessage
				return dec.Decode(&skip)
			})
		}
		var skip json.RawMessage
		return dec.Decode(&skip)
	})
	switch {
	case status == "error" || (err == nil && status != "success"):
		return nil, fmt.Errorf("prometheus said %s (%s: %s)", cmp.Or(status, resp.Status), errType, errMsg)
	case err != nil && resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("prometheus's reply (%s): %w", resp.Status, err)
	case err != nil:
		return nil, fmt.Errorf("prometheus's reply: %w", err)
	case resultType != "matrix":
		return nil, fmt.Errorf("a %s, want a matrix", cmp.Or(resultType, "reply without a result type"))
	}
	return out, nil
}

// walkObject reads a JSON object from dec, calling member for each key
// with the decoder at its value, which member must consume.
func walkObject(dec *json.Decoder, member func(key string) error) error {
	if tok, err := dec.Token(); err != nil {
		return err
	} else if tok != json.Delim('{') {
		return fmt.Errorf("%v where an object was due", tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if err := member(key); err != nil {
			return err
		}
	}
	_, err := dec.Token() // }
	return err
}

// walkArray reads a JSON array from dec, calling elem with the decoder at
// each element, which elem must consume.
func walkArray(dec *json.Decoder, elem func() error) error {
	if tok, err := dec.Token(); err != nil {
		return err
	} else if tok != json.Delim('[') {
		return fmt.Errorf("%v where an array was due", tok)
	}
	for dec.More() {
		if err := elem(); err != nil {
			return err
		}
	}
	_, err := dec.Token() // ]
	return err
}

var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// Legend names a series as Grafana would with a legend format: {{label}}
// replaced by its value; an empty format lists the labels.
func Legend(format string, labels map[string]string) string {
	if format == "" {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			if k != "__name__" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + labels[k]
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return legendLabel.ReplaceAllStringFunc(format, func(m string) string {
		return labels[legendLabel.FindStringSubmatch(m)[1]]
	})
}

// MetricNames returns the names of every series Prometheus holds over the
// range.
func (s *Source) MetricNames(ctx context.Context) (map[string]bool, error) {
	vals, _, _, err := s.api.LabelValues(ctx, "__name__", nil, s.From, s.To)
	if err != nil {
		return nil, fmt.Errorf("metric names: %w", err)
	}
	out := map[string]bool{}
	for _, v := range vals {
		out[string(v)] = true
	}
	return out, nil
}

// MetricsIn returns the names of pagecast's metrics (and Go's and the
// process's) an expression uses.
func MetricsIn(expr string) []string { return metricName.FindAllString(expr, -1) }

var metricName = regexp.MustCompile(`\b(pagecast[_:][a-zA-Z0-9_:]+|process_[a-z0-9_]+|go_[a-z0-9_]+)`)
