"""FETCH and SEARCH over opened messages: MIME parsing and item rendering (`fetch`,
`plan`) and search keys evaluated in memory (`search`). Never calls storage."""
