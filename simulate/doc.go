// Package simulate runs pagecast's migration engine on a recorded or
// synthetic workload, on a virtual clock: what a migration of a VM would
// cost, for every mode, before it starts and for VMs far larger than this
// machine holds.
//
// The engine is package migrator's, unchanged: Run (and RunAll, several
// modes at once) gives it a Guest whose writes come from a Workload and whose pages stand for a content
// mix, and migrator.Simulate weighs its records on a virtual link instead
// of sending them. The model:
//
//   - Each epoch the guest writes the workload's pages for that epoch. A
//     throttled guest advances through the workload at its CPU share; a
//     paused one not at all. A workload that ends before the migration is
//     replayed from the epoch the migration started at (Result.Replays says how often).
//   - The link moves each record's bytes, exactly as the wire would frame
//     them, at the bandwidth.
//   - Page contents follow a Mix of mecom's classes: a page holds a sample
//     page of its class, generated once and classified by mecom itself, so
//     zero pages and MECOM's compression are measured on real bytes. A page
//     the workload writes is no longer zero.
//   - In TSMC's stage 3 (and after MODE+postcopy's switch to post-copy)
//     the guest runs on at the destination; it faults on the pages it
//     writes before the push has sent them, each vCPU on one at a time,
//     and those are pulled.
//
// RunAll simulates several modes at once, one a core as memory allows;
// mode auto (Choose) predicts every mode that way.
package simulate
