# testfixture sqlite-tests/suite/integrity.tcl DB: prints the result of PRAGMA integrity_check
# on DB, one line per message ("ok" when sound).
#
# tester.tcl moves the pending byte (the lock-byte page) to 0x10000 for every test, so the
# databases the tests write leave page 65 (at 1024-byte pages) unused; a stock sqlite3 reports
# "Page 65 is never used" on every one of them. Check with the tests' own pending byte.
#
# Some tests index columns with collations they define in TCL (vacuum2.test: `cmp`, first
# ascending, then redefined as descending). Such a collation is unknown here; it is defined
# as ascending, then as descending string comparison, and the database counts as sound when
# one of the two passes (the note "unknown collations ... assumed" says so).
sqlite3_test_control_pending_byte 0x0010000
set path [lindex $argv 0]
proc check {order} {
    global path
    sqlite3 db $path
    db collation_needed [list define_collation $order]
    set rc [catch {db eval {PRAGMA integrity_check}} res]
    db close
    if {$rc} { return [list error $res] }
    return [list done $res]
}
proc define_collation {order name} {
    lappend ::collations $name
    if {$order eq "asc"} {
        db collate $name {apply {{a b} {string compare $a $b}}}
    } else {
        db collate $name {apply {{a b} {string compare $b $a}}}
    }
}
set ::collations {}
set first [check asc]
if {[llength $::collations] > 0 && [lindex $first 1] ne "ok"} {
    set second [check desc]
    if {[lindex $second 1] eq "ok"} { set first $second }
}
if {[lindex $first 0] eq "error"} {
    puts "error: [lindex $first 1]"
    exit 1
}
if {[llength $::collations] > 0} {
    puts "note: unknown collations [lsort -unique $::collations] assumed to be string comparisons"
}
puts [join [lindex $first 1] "\n"]
