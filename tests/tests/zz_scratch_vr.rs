use rio_qemu_tests::*;
use std::time::Duration;

#[test]
fn scratch() {
    let mut t = boot("scratch");
    let vm = t.vm();
    sh(vm, "rio-load && rio format");
    sh(
        vm,
        "vista-rio crash-run --name vseg --seed 42 --iters 60 > /dev/null",
    );
    vm.spawn("exec vista-rio crash-run --name vseg --seed 42 --iters 25 --hold > /tmp/log 2>&1")
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    println!("hold: {}", sh(vm, "tail -2 /tmp/log; rio ls -l"));
    vm.panic().unwrap();
    vm.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    println!(
        "after1: {}",
        sh(vm, "vista-rio check --name vseg --seed 42; rio ls -l")
    );
    vm.spawn("echo $$ > /tmp/pid; exec vista-rio crash-run --name vseg --seed 42 --journal --pause-us 3000 > /tmp/log 2>&1").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    println!("before: {}", sh(vm, "tail -1 /tmp/log"));
    vm.panic().unwrap();
    vm.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    let out = vm.run("vista-rio check --name vseg --seed 42; rio ls -l; rio cat vseg.journal | od -A d -t x8 -w32 | sort -k2 | tail -40").unwrap();
    println!("after2: {}\n{}", out.stdout_str(), out.stderr_str());
}
