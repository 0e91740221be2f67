-- The extension loads in the sqlite3 shell, twice without harm, and reports its status.
.load ./target/release/liblitestream
.load ./target/release/liblitestream
SELECT json_valid(litestream_status());
SELECT json_extract(litestream_status(), '$.format');
SELECT json_extract(litestream_status(), '$.version') = json_extract(litestream_status('main'), '$.version');
SELECT json_type(litestream_status(), '$.databases');
