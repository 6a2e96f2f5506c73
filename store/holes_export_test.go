package store

// ScrapeQueries exposes the queries of a metrics scrape to the external tests.
var ScrapeQueries = scrapeQueries
