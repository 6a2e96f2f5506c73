// Package care is the clinical domain of caseroom: check-ins, vitals, units,
// plausibility, alert thresholds and reminder schedules. It imports no Matrix,
// SQL or HTTP code; other packages store, send and file what it validates.
package care
