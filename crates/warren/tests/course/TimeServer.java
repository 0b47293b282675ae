// The course's single-threaded TimeServer, as the tests run it: on a free port (printed first),
// for each connection it writes a java.util.Date with an ObjectOutputStream, prints the
// Date.toString() it sent, then sleeps 4 s before closing, as the course's server does.
import java.io.ObjectOutputStream;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.Date;

public class TimeServer {
    public static void main(String[] args) throws Exception {
        ServerSocket listener = new ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress());
        System.out.println("port " + listener.getLocalPort());
        while (true) {
            Socket sock = listener.accept();
            Date now = new Date();
            ObjectOutputStream out = new ObjectOutputStream(sock.getOutputStream());
            out.writeObject(now);
            out.flush();
            System.out.println("sent " + now);
            Thread.sleep(4000);
            sock.close();
        }
    }
}
