"""Reports: results on disk, JUnit, KCIDB, statistics, summary/HTML and its sections, runs re-rendered, merged and compared."""
