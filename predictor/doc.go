// Package predictor forecasts which guest pages a virtual machine will
// dirty next: for every page, the probability that it is written in the
// next epoch, or within the next h epochs ("before the current pre-copy
// round ends"). The migrator uses the forecast to defer pages that are
// about to be dirtied again instead of resending them every round.
//
// The model (Model, after Wei et al.) combines temporal locality, the
// page's own recency-weighted write history, with spatial locality, the
// recent writes to its neighbours and how far it lies from the pages a
// program took fresh in the last epoch (its allocation frontier), and
// with the cohort of pages last written in the same epoch, in a logistic
// regression whose weights are fitted to each VM and refitted online as
// the trace unfolds; each horizon's forecast is blended with the per-page
// Markov chain's in shares chosen on the epochs after each fit. Its state
// is 15 bytes a page (16 with its per-region terms for two horizons, at
// most). Predict is a single pass over flat arrays. Pages that are quiet
// (not written in 64 epochs, nor their neighbours lately, far from the
// frontier) and alike in their region, count and stay share a forecast:
// Predict and Observe's passes take them 8 at a time, so their cost falls
// with the share of a VM's memory that is idle (TestQuietShortcutsExact
// checks that this changes no forecast); Observe's passes go only over
// the chunks near the writes of the last 64 epochs. A caller that needs
// few pages' probabilities asks a Scorer for them one at a time, each the
// one PredictHorizon would give. In a VM of 1 GiB or more, Observe's
// passes and a forecast of every page take runs of at least 512 MiB of
// guest at once, one a core (Options.Workers): the passes share nothing
// across 2 MiB blocks, so the result is the same (TestSpansExact).
//
// An epoch can also be shown as its parts in time order (ObserveParts; a
// trace recorded in epochs a fraction of the model's, grouped by
// GroupEpochs): the model then keeps which quarter of the epoch each page
// was written in (half a byte a page more), and a page written late, or in
// several quarters, is forecast likelier to be written again in the next;
// so is a page whose neighbours were written late.
//
// Baselines are judged the same way: dirty last epoch ⇒ dirty next
// (NewLastEpoch), the write frequency over recent epochs (NewFrequency)
// and a two-state Markov chain per page (NewMarkov).
//
// Forecasts reach any horizon: PredictHorizon gives the probability that
// a page is dirtied within the next h epochs, what a pre-copy round asks
// ("is it dirtied again before this round ends?"). The model fits each
// horizon it is asked for on its own.
//
// Evaluate walks a trace forward, predicting epoch t from the epochs
// before it, and scores every predictor on the same (page, epoch) pairs:
// precision, recall and F1 at a threshold, Brier score, ROC AUC,
// calibration (reliability bins, expected calibration error) and the
// predicted against the actual number of dirty pages per epoch.
// EvaluateFile does it for a trace file in one call; PlotCalibration and
// PlotEpochs draw the results; `pagecast predict eval` prints them.
//
// # Tests
//
// Real programs' traces, recorded by pagecast itself (testdata/real,
// testdata/record-real.sh), judge the model; some of them are held out of
// every choice made in it (TestRealPrograms); testdata/parts holds them
// recorded in epochs of 25 ms (TestRealParts). The loops over every page
// (Predict, Observe's passes, the scoring in Evaluate, the fitting) are
// marked //go:norace: under the race detector they ran 40 times slower,
// which made this package's tests take minutes. They touch only the
// predictor's own arrays; the functions that call them are instrumented
// and read or write the fields a concurrent misuse would race on (a
// Model's epoch count, its expected count), so the race detector still
// catches a Model used from two goroutines.
package predictor
