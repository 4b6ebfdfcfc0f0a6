package dashboards

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// File is one generated dashboard: its file name and JSON.
type File struct {
	Name string
	JSON []byte
}

// Generate builds every dashboard as indented JSON, in file order.
func Generate() ([]File, error) {
	var out []File
	for _, d := range []struct {
		name  string
		build func() *dashboard.DashboardBuilder
	}{
		{"dirtying.json", dirtying},
		{"migrations.json", migrations},
		{"profiler-health.json", profilerHealth},
	} {
		b, err := d.build().Build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", d.name, err)
		}
		j, err := json.MarshalIndent(b, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", d.name, err)
		}
		out = append(out, File{d.name, append(j, '\n')})
	}
	return out, nil
}

// datasource is the data source every panel and query uses: the
// dashboard's datasource variable.
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// newDashboard starts a dashboard with pagecast's common settings and its
// datasource variable.
func newDashboard(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"pagecast"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("10s").
		Time("now-15m", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Description("The Prometheus that scrapes pagecast.").
			Type("prometheus"))
}

// labelVariable is a variable whose values are label's values on metric
// (a selector); multi allows several values and All, which is allValue
// (e.g. .*) or, if that is empty, every value the query returns.
func labelVariable(name, label, metric, description string, multi bool, allValue string) *dashboard.QueryVariableBuilder {
	q := fmt.Sprintf("label_values(%s, %s)", metric, label)
	v := dashboard.NewQueryVariableBuilder(name).
		Label(name).
		Description(description).
		Datasource(datasource).
		Query(dashboard.StringOrMap{String: cog.ToPtr(q)}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc)
	if multi {
		v = v.Multi(true).IncludeAll(true)
		if allValue != "" {
			v = v.AllValue(allValue)
		}
	}
	return v
}

// query is one PromQL target of a panel.
type query struct{ expr, legend string }

func targets(qs []query, format prometheus.PromQueryFormat) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], len(qs))
	for i, q := range qs {
		b := prometheus.NewDataqueryBuilder().
			Datasource(datasource).
			RefId(string(rune('A' + i))).
			Expr(q.expr).
			LegendFormat(q.legend).
			Format(format)
		if format == prometheus.PromQueryFormatTable {
			// A row per series, its last value over the dashboard's
			// range: a range query gave a row per sample (walk 52: 103
			// rows for 5 migrations over 15 minutes). A query that
			// takes the range itself is left as it is.
			if !strings.Contains(q.expr, "[$__range]") {
				b = b.Expr("last_over_time(" + q.expr + "[$__range])")
			}
			b = b.Instant()
		} else {
			b = b.Range()
		}
		out[i] = b
	}
	return out
}

// Panel kinds.
type kind int

const (
	timeSeries kind = iota
	heatmapPanel
	statPanel
	tablePanel
	stateTimeline
)

// panel describes one panel; build turns it into the SDK's builder.
type panel struct {
	kind               kind
	title, description string
	unit               string
	queries            []query
	width, height      uint32 // grid units (24 across); 0: 12 × 8
	signed             bool   // a time series that goes below zero: no Min(0)
	names              bool   // a stat of an info metric: its legend alone, not its value (always 1)
	// colors gives the series whose names match a regexp a colour:
	// fixed, or, where it is "0:A,1:B", by value (a flag that is 0 or 1).
	// Grafana's default gave every series green, failed=1 too (walk 121).
	colors []seriesColor
	// columns, for a table: the labels to show, in order, each with its
	// header ("" for the label's name), and "Value" for the value; the
	// rest (Time, __name__, job, instance) are hidden (walk 121: raw
	// tables of every label).
	columns []column
}

// column is a table's column: a label, or Value, and its header.
type column struct{ field, header string }

// organize is the transformation that shows a table's columns alone.
func organize(columns []column) dashboard.DataTransformerConfig {
	exclude := map[string]bool{"Time": true, "__name__": true, "job": true, "instance": true, "Value": true}
	index, rename := map[string]int{}, map[string]string{}
	for i, c := range columns {
		delete(exclude, c.field)
		index[c.field] = i
		if c.header != "" {
			rename[c.field] = c.header
		}
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{
		"excludeByName": exclude, "indexByName": index, "renameByName": rename}}
}

// seriesColor is panel.colors' entry.
type seriesColor struct{ match, color string }

// colorOverrides are the overrides that colour the series as colors says.
func colorOverrides(colors []seriesColor) []cog.Builder[dashboard.DashboardFieldConfigSourceOverrides] {
	var out []cog.Builder[dashboard.DashboardFieldConfigSourceOverrides]
	for _, c := range colors {
		props := []dashboard.DynamicConfigValue{{Id: "color", Value: map[string]any{"mode": "fixed", "fixedColor": c.color}}}
		if low, high, ok := strings.Cut(c.color, ","); ok {
			props = []dashboard.DynamicConfigValue{
				{Id: "color", Value: map[string]any{"mode": "thresholds"}},
				{Id: "thresholds", Value: map[string]any{"mode": "absolute", "steps": []map[string]any{
					{"color": strings.TrimPrefix(low, "0:"), "value": nil}, {"color": strings.TrimPrefix(high, "1:"), "value": 1}}}},
			}
		}
		out = append(out, dashboard.NewDashboardFieldConfigSourceOverridesBuilder().
			Matcher(dashboard.MatcherConfig{Id: "byRegexp", Options: c.match}).Properties(props))
	}
	return out
}

func (p panel) build() cog.Builder[dashboard.Panel] {
	w, h := p.width, p.height
	if w == 0 {
		w = 12
	}
	if h == 0 {
		h = 8
	}
	switch p.kind {
	case heatmapPanel:
		return heatmap.NewPanelBuilder().Title(p.title).Description(p.description).Datasource(datasource).
			Unit(p.unit).Span(w).Height(h).Targets(targets(p.queries, prometheus.PromQueryFormatTimeSeries)).
			Calculate(false).
			Color(heatmap.NewHeatmapColorOptionsBuilder().Mode(heatmap.HeatmapColorModeScheme).Scheme("Oranges").Steps(64)).
			YAxis(heatmap.NewYAxisConfigBuilder().AxisLabel("guest-physical address"))
	case statPanel:
		text := common.BigValueTextModeValueAndName
		if p.names {
			text = common.BigValueTextModeName // walk 106: "1" beside the hook's name
		}
		return stat.NewPanelBuilder().Title(p.title).Description(p.description).Datasource(datasource).
			Unit(p.unit).Span(w).Height(h).Targets(targets(p.queries, prometheus.PromQueryFormatTimeSeries)).
			TextMode(text).
			GraphMode(common.BigValueGraphModeNone).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"})).
			Overrides(colorOverrides(p.colors))
	case tablePanel:
		b := table.NewPanelBuilder().Title(p.title).Description(p.description).Datasource(datasource).
			Unit(p.unit).Span(w).Height(h).Targets(targets(p.queries, prometheus.PromQueryFormatTable))
		if len(p.columns) > 0 {
			b = b.WithTransformation(organize(p.columns))
		}
		return b
	case stateTimeline:
		return statetimeline.NewPanelBuilder().Title(p.title).Description(p.description).Datasource(datasource).
			Unit(p.unit).Span(w).Height(h).Targets(targets(p.queries, prometheus.PromQueryFormatTimeSeries)).
			ShowValue(common.VisibilityModeNever).MergeValues(true).
			Overrides(colorOverrides(p.colors))
	default:
		b := timeseries.NewPanelBuilder().Title(p.title).Description(p.description).Datasource(datasource).
			Unit(p.unit).Span(w).Height(h).Targets(targets(p.queries, prometheus.PromQueryFormatTimeSeries))
		if !p.signed {
			b = b.Min(0)
		}
		return b.Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom))
	}
}

// withPanels adds a row and its panels to d.
func withPanels(d *dashboard.DashboardBuilder, row string, panels ...panel) *dashboard.DashboardBuilder {
	d = d.WithRow(dashboard.NewRowBuilder(row))
	for _, p := range panels {
		d = d.WithPanel(p.build())
	}
	return d
}
