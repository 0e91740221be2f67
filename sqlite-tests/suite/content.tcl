# testfixture sqlite-tests/suite/content.tcl DB: prints one line, the MD5 of DB's logical
# content (its schema, then every row of every ordinary table in rowid or key order), or
# "error: ..." when it cannot be read. Two databases with the same line hold the same data
# whatever their page layout (a replica restored from LTX files and its source, compared
# after a test). The pending byte as in integrity.tcl.
sqlite3_test_control_pending_byte 0x0010000
set path [lindex $argv 0]
proc content {} {
    global path
    sqlite3 db $path
    # Tests' own collations (see integrity.tcl) only order indexes; a table scan needs none.
    db collation_needed {apply {{name} {db collate $name {apply {{a b} {string compare $a $b}}}}}}
    set out {}
    db eval {SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name} s {
        append out [list $s(type) $s(name) $s(tbl_name) $s(sql)] \n
    }
    foreach t [db eval {SELECT name FROM sqlite_schema WHERE type = 'table'
                        AND sql NOT LIKE 'CREATE VIRTUAL%'
                        ORDER BY name}] {
        append out "table $t\n"
        db eval "SELECT * FROM \"[string map {\" \"\"} $t]\"" row {
            unset -nocomplain row(*)
            foreach c [lsort [array names row]] { append out [list $c $row($c)] }
            append out \n
        }
    }
    db close
    return [md5 $out]
}
if {[catch content res]} {
    puts "error: $res"
    exit 1
}
puts $res
