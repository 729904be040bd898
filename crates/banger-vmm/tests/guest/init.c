/*
 * Test init for banger-vmm's integration tests; runs as /init in an initramfs.
 *
 * Probe mode (banger.probe=1 on the kernel command line): prints the probe
 * line and powers off. Otherwise: loads the virtio modules from /m, reports
 * each virtio disk on the console, writes a marker to the start of the first
 * disk, replies to one line on the banger.agent virtio-serial port, then powers
 * off when the ACPI power button is pressed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static const char *const modules[] = {
    "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console", "button", "evdev",
};

static void power_off(void) {
    sync();
    reboot(RB_POWER_OFF);
    for (;;) pause();
}

static void fail(const char *what) {
    printf("guest: failed: %s: %m\n", what);
    fflush(stdout);
    power_off();
}

static int read_text(const char *path, char *buffer, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buffer, size - 1);
    close(fd);
    if (n < 0) return -1;
    while (n > 0 && (buffer[n - 1] == '\n' || buffer[n - 1] == ' ')) n--;
    buffer[n] = '\0';
    return 0;
}

static void load_modules(void) {
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/m/%s.ko", modules[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail(path);
        if (syscall(SYS_finit_module, fd, "", 0) != 0) fail(path);
        close(fd);
    }
}

/* Waits up to 10 s for a path to appear. */
static int wait_for(const char *path) {
    for (int i = 0; i < 1000; i++) {
        if (access(path, F_OK) == 0) return 0;
        usleep(10000);
    }
    return -1;
}

static void report_disks(void) {
    static const char *const names[] = {"vda", "vdb"};
    for (size_t i = 0; i < 2; i++) {
        char path[64], serial[64] = "", ro[8] = "";
        snprintf(path, sizeof path, "/sys/block/%s/serial", names[i]);
        if (read_text(path, serial, sizeof serial) != 0) continue;
        snprintf(path, sizeof path, "/sys/block/%s/ro", names[i]);
        read_text(path, ro, sizeof ro);
        printf("guest: disk %s serial=%s ro=%s\n", names[i], serial, ro);
    }
    fflush(stdout);
}

static void mark_first_disk(void) {
    static const char marker[] = "written-by-guest";
    int fd = open("/dev/vda", O_WRONLY);
    if (fd < 0) fail("open /dev/vda");
    if (write(fd, marker, sizeof marker - 1) != sizeof marker - 1) fail("write /dev/vda");
    if (fsync(fd) != 0) fail("fsync /dev/vda");
    close(fd);
}

/* Finds the /dev path of the virtio-serial port called banger.agent. */
static int find_agent_port(char *path, size_t size) {
    char name[64] = "";
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return -1;
    struct dirent *entry;
    int found = -1;
    while ((entry = readdir(dir)) != NULL) {
        char name_path[300];
        snprintf(name_path, sizeof name_path, "/sys/class/virtio-ports/%s/name", entry->d_name);
        if (read_text(name_path, name, sizeof name) == 0 && strcmp(name, "banger.agent") == 0) {
            snprintf(path, size, "/dev/%s", entry->d_name);
            found = 0;
            break;
        }
    }
    closedir(dir);
    return found;
}

static void answer_agent_port(void) {
    char path[300] = "";
    for (int i = 0; i < 1000 && find_agent_port(path, sizeof path) != 0; i++) usleep(10000);
    if (path[0] == '\0') fail("find the banger.agent port");
    if (wait_for(path) != 0) fail(path);

    int fd = open(path, O_RDWR);
    if (fd < 0) fail(path);
    char request[128];
    size_t used = 0;
    while (used < sizeof request - 1) {
        ssize_t n = read(fd, request + used, 1);
        if (n <= 0) fail("read agent port");
        if (request[used] == '\n') break;
        used++;
    }
    request[used] = '\0';
    char reply[200];
    int len = snprintf(reply, sizeof reply, "pong %s\n", request);
    if (write(fd, reply, len) != len) fail("write agent port");
    printf("guest: agent port %s answered\n", path);
    fflush(stdout);
}

/* Returns an open descriptor of the ACPI power button's event device. */
static int open_power_button(void) {
    for (int index = 0; index < 8; index++) {
        char path[64], name[64] = "";
        snprintf(path, sizeof path, "/sys/class/input/event%d/device/name", index);
        if (read_text(path, name, sizeof name) != 0 || strstr(name, "Power Button") == NULL) continue;
        snprintf(path, sizeof path, "/dev/input/event%d", index);
        if (wait_for(path) != 0) fail(path);
        return open(path, O_RDONLY);
    }
    return -1;
}

static void wait_for_power_button(void) {
    int fd = -1;
    for (int i = 0; i < 1000 && (fd = open_power_button()) < 0; i++) usleep(10000);
    if (fd < 0) fail("open the power button input device");
    printf("guest: ready\n");
    fflush(stdout);
    struct input_event event;
    while (read(fd, &event, sizeof event) == sizeof event) {
        if (event.type == EV_KEY && event.code == KEY_POWER && event.value == 1) {
            printf("guest: power button pressed\n");
            fflush(stdout);
            power_off();
        }
    }
    fail("read power button events");
}

int main(void) {
    char cmdline[1024] = "";
    if (mount("proc", "/proc", "proc", 0, NULL) != 0) fail("mount /proc");
    read_text("/proc/cmdline", cmdline, sizeof cmdline);
    if (strstr(cmdline, "banger.probe=1") != NULL) {
        struct utsname host;
        uname(&host);
        printf("banger-probe: ok %s\n", host.release);
        fflush(stdout);
        power_off();
    }

    if (mount("sysfs", "/sys", "sysfs", 0, NULL) != 0) fail("mount /sys");
    if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) != 0) fail("mount /dev");
    load_modules();
    if (wait_for("/dev/vda") != 0) fail("wait for /dev/vda");
    report_disks();
    mark_first_disk();
    answer_agent_port();
    wait_for_power_button();
    return 0;
}
