package dashboards

import (
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"sort"
)

//go:embed *.json
var committed embed.FS

// Dashboard is what pagecast reads back from a committed dashboard: its
// variables and panels with their queries.
type Dashboard struct {
	File        string     `json:"-"`
	UID         string     `json:"uid"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Templating  Templating `json:"templating"`
	Panels      []Panel    `json:"panels"`
}

// Templating holds a dashboard's variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a dashboard variable: "datasource" (Query is the plugin) or
// "query" (Query is label_values(SELECTOR, LABEL)).
type Variable struct {
	Type       string `json:"type"`
	Name       string `json:"name"`
	Query      any    `json:"query"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

// Panel is one panel; rows are panels of type "row" without targets.
type Panel struct {
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *DataSourceRef `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []Target `json:"targets"`
	Options struct {
		TextMode string `json:"textMode"` // a stat's: "name" shows each series' name alone
	} `json:"options"`
	Transformations []Transformation `json:"transformations"`
}

// Transformation is one of a panel's data transformations; pagecast reads
// the options of organize alone.
type Transformation struct {
	ID      string `json:"id"`
	Options struct {
		ExcludeByName map[string]bool   `json:"excludeByName"`
		IndexByName   map[string]int    `json:"indexByName"`
		RenameByName  map[string]string `json:"renameByName"`
	} `json:"options"`
}

// Columns are the fields a table panel shows of a table with fields (its
// series' labels and Value), as its organize transformations leave them,
// as Grafana does: the excluded dropped, the rest in indexByName's order
// (those without an index after those with one, as they came), each with
// its header, renameByName's or its own name.
func (p Panel) Columns(fields []string) (names, headers []string) {
	type column struct{ field, header string }
	cols := make([]column, len(fields))
	for i, f := range fields {
		cols[i] = column{f, f}
	}
	for _, t := range p.Transformations {
		if t.ID != "organize" {
			continue
		}
		o := t.Options // by the names the transformations before it left
		cols = slices.DeleteFunc(cols, func(c column) bool { return o.ExcludeByName[c.header] })
		slices.SortStableFunc(cols, func(a, b column) int {
			return cmp.Compare(indexOf(o.IndexByName, a.header), indexOf(o.IndexByName, b.header))
		})
		for i, c := range cols {
			if r := o.RenameByName[c.header]; r != "" {
				cols[i].header = r
			}
		}
	}
	for _, c := range cols {
		names = append(names, c.field)
		headers = append(headers, c.header)
	}
	return names, headers
}

// indexOf is a field's place in an organize's indexByName; those without
// one go last.
func indexOf(index map[string]int, field string) int {
	if i, ok := index[field]; ok {
		return i
	}
	return math.MaxInt
}

// Unit is the panel's unit (Grafana's unit id).
func (p Panel) Unit() string { return p.FieldConfig.Defaults.Unit }

// Target is one query of a panel.
type Target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   *DataSourceRef `json:"datasource"`
	Instant      bool           `json:"instant"` // one value per series, at the range's end
}

// DataSourceRef names a data source.
type DataSourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Committed reads the committed dashboards, in file name order.
func Committed() ([]Dashboard, error) {
	names, err := fs.Glob(committed, "*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Dashboard
	for _, name := range names {
		b, err := committed.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", name, err)
		}
		d.File = name
		out = append(out, d)
	}
	return out, nil
}

// CommittedJSON returns the committed file name's bytes.
func CommittedJSON(name string) ([]byte, error) { return committed.ReadFile(name) }

// Rules is rules.yml: Prometheus recording and alerting rules on
// pagecast's metrics.
//
//go:embed rules.yml
var Rules []byte
