// Package ehr files caseroom's records into an EHR as FHIR R4 over REST (application/fhir+json) and reads back
// what the bot needs. It holds a small client with three ways to authenticate (none, a static bearer token, SMART
// Backend Services), hand-written types for the few resources caseroom uses, the mapping from domain records
// (care.CheckIn) to FHIR, and a retry helper for the outbox.
//
// Writes are idempotent: every resource carries an identifier with system urn:caseroom:<kind> and the Matrix event
// ID (or record ID) in its value, and is created conditionally on it, so a retry never duplicates.
//
// Errors from the server are *Error values: Retryable reports whether trying again may help (network errors, 408,
// 429, 5xx); their message carries the status and the OperationOutcome's issue codes and locations, never its text
// (which may echo PHI), so it may be logged. Nothing here logs; callers must not log request or resource bodies
// (they hold PHI), Error.Outcome's text, or tokens.
//
// Every record names who made it: a Patient or Practitioner reference, or a Matrix user by identifier
// (MatrixUserSystem) when caseroom knows no FHIR resource of theirs.
package ehr
