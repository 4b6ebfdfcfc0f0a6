package service

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/trace"
)

// FuzzAPI asks the API for arbitrary paths and queries, on a dense VM and
// on a huge one kept on a page map: no panic, a JSON reply, and a 200's
// page ranges within the VM and the bounds.
func FuzzAPI(f *testing.F) {
	for _, s := range []string{"/v1/vms", "/v1/vms/d", "/v1/vms/m/probabilities?start=1023&count=1&horizon=3",
		"/v1/vms/d/hotset?threshold=0.1&limit=2&start=5&horizon=2", "/v1/vms/m/hotset?start=33554439&limit=1",
		"/v1/vms/d/probabilities?start=1024", "/v1/vms/d/probabilities?count=1;start=2", "/v1/vms/d?x=1",
		"/v1/vms/m/hotset?threshold=NaN", "/v1/vms/m/probabilities?start=1073741823&count=65536", "/metrics"} {
		f.Add(s)
	}
	svc := New(nil)
	dense, _ := svc.AddVM("d", 1024, 4096, time.Second, "test")
	hot := []uint64{5, 6, 7, 1<<25 + 7, 1<<25 + 8}
	_, pm := predictor.MapPages([]trace.Epoch{{Index: 1, Pages: slices.Clone(hot)}}, 1<<30)
	mapped, err := svc.AddMappedVM("m", 1<<30, pm, 4096, time.Second, "test")
	if err != nil {
		f.Fatal(err)
	}
	for range 20 {
		dense.Observe([]uint64{5, 6, 7, 900})
		mapped.Observe([]uint64{0, 1, 2, 3})
	}
	h := svc.Handler()
	f.Fuzz(func(t *testing.T, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") || len(target) > 512 {
			return
		}
		req, err := http.NewRequest(http.MethodGet, "http://pagecast"+target, nil)
		if err != nil {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if strings.HasPrefix(target, "/metrics") && w.Code == 200 {
			return
		}
		var body map[string]any
		var list []any
		if json.Unmarshal(w.Body.Bytes(), &body) != nil && json.Unmarshal(w.Body.Bytes(), &list) != nil {
			if w.Code != http.StatusMovedPermanently && w.Code != http.StatusTemporaryRedirect {
				t.Fatalf("GET %q: %d with a body not JSON: %q", target, w.Code, w.Body.Bytes())
			}
			return
		}
		if w.Code != 200 || body == nil {
			return
		}
		pages := map[string]float64{"d": 1024, "m": 1 << 30}[body["vm"].(string)]
		if probs, ok := body["probabilities"].([]any); ok {
			start, count := body["start"].(float64), body["count"].(float64)
			if len(probs) != int(count) || count > maxRange || start+count > pages {
				t.Fatalf("GET %q: %d probabilities, start %v count %v", target, len(probs), start, count)
			}
		}
		if ps, ok := body["pages"].([]any); ok {
			if len(ps) > maxRange {
				t.Fatalf("GET %q: %d hot pages", target, len(ps))
			}
			for i, p := range ps {
				if p.(float64) < body["start"].(float64) || p.(float64) >= pages || i > 0 && p.(float64) <= ps[i-1].(float64) {
					t.Fatalf("GET %q: hot pages %v", target, ps)
				}
			}
		}
	})
}
