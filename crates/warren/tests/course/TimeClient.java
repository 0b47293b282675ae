// The course's TimeClient, as the tests run it: reads one java.util.Date with an
// ObjectInputStream and prints it with Date.toString().
import java.io.ObjectInputStream;
import java.net.Socket;
import java.util.Date;

public class TimeClient {
    public static void main(String[] args) throws Exception {
        String host = args[0];
        try (Socket s = new Socket(host, Integer.parseInt(args[1]))) {
            ObjectInputStream in = new ObjectInputStream(s.getInputStream());
            Date date = (Date) in.readObject();
            System.out.println("Time on host " + host + " is " + date);
        }
    }
}
